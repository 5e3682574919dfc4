"""Writes a self-signed TLS certificate for Envoy in the compose dev profile (never for production).

    python3 dev_cert.py DIR     # DIR/tls.crt and DIR/tls.key, for localhost, 127.0.0.1 and envoy

Runs in the authz-demo-mcp image (which has `cryptography`) as a one-shot compose service, so the
dev stack needs no openssl on the host and no registry. Keeps an existing certificate that is still
valid for a week, so restarts do not change it.
"""

import datetime
import ipaddress
import pathlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def main():
    directory = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/certs")
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert_path.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if existing.not_valid_after_utc > now + datetime.timedelta(days=7):
            print(f"dev certificate {cert_path} kept (valid until {existing.not_valid_after_utc})")
            return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    names = [x509.DNSName("localhost"), x509.DNSName("envoy"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    print(f"dev certificate written to {cert_path}")


if __name__ == "__main__":
    main()
