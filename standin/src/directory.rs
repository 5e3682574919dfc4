//! The Workspace tenant behind the Directory and Cloud Identity APIs: the domains it owns, its
//! admins (valid `sub`s for domain-wide delegation), its groups with their direct members, and
//! whether it has the premium edition Cloud Identity's transitive checks need.
//!
//! Every key is compared lowercased, as Google compares emails.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Body of `POST /_standin/directory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DirectorySpec {
    pub(crate) domains: Vec<String>,
    pub(crate) admins: Vec<String>,
}

/// A direct member of a group, as `members.get` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) email: String,
    /// The member is itself a group.
    pub(crate) is_group: bool,
    pub(crate) status: String,
}

struct Group {
    /// Direct members, lowercased, in the order given.
    members: Vec<String>,
    /// Per-member status; `ACTIVE` when absent.
    status: HashMap<String, String>,
}

struct Tenant {
    domains: Vec<String>,
    admins: HashSet<String>,
    groups: HashMap<String, Group>,
    premium: bool,
}

pub(crate) struct Directory(Mutex<Tenant>);

impl Default for Directory {
    fn default() -> Self {
        Self(Mutex::new(Tenant {
            domains: Vec::new(),
            admins: HashSet::new(),
            groups: HashMap::new(),
            premium: true,
        }))
    }
}

impl Directory {
    /// Replaces the owned domains and the admins.
    pub(crate) fn configure(&self, spec: &DirectorySpec) {
        let mut tenant = self.lock();
        tenant.domains = spec.domains.iter().map(|d| d.to_lowercase()).collect();
        tenant.admins = spec.admins.iter().map(|a| a.to_lowercase()).collect();
    }

    /// Replaces `group`'s direct members (statuses reset to `ACTIVE`).
    pub(crate) fn set_group<S: AsRef<str>>(&self, group: &str, members: &[S]) {
        let group_entry = Group {
            members: members.iter().map(|m| m.as_ref().to_lowercase()).collect(),
            status: HashMap::new(),
        };
        self.lock().groups.insert(group.to_lowercase(), group_entry);
    }

    /// Sets the status (`ACTIVE`, `SUSPENDED`, ...) `members.get` reports for a direct member.
    pub(crate) fn set_status(&self, group: &str, member: &str, status: &str) -> anyhow::Result<()> {
        let mut tenant = self.lock();
        let entry = tenant
            .groups
            .get_mut(&group.to_lowercase())
            .ok_or_else(|| anyhow::anyhow!("no group {group}"))?;
        let member = member.to_lowercase();
        anyhow::ensure!(
            entry.members.contains(&member),
            "{member} is not a direct member of {group}"
        );
        entry.status.insert(member, status.to_owned());
        Ok(())
    }

    pub(crate) fn set_premium(&self, premium: bool) {
        self.lock().premium = premium;
    }

    pub(crate) fn premium(&self) -> bool {
        self.lock().premium
    }

    pub(crate) fn is_admin(&self, email: &str) -> bool {
        self.lock().admins.contains(&email.to_lowercase())
    }

    /// Whether `email` is in one of the owned domains.
    pub(crate) fn owns(&self, email: &str) -> bool {
        let Some((_, domain)) = email.rsplit_once('@') else {
            return false;
        };
        let domain = domain.to_lowercase();
        self.lock().domains.contains(&domain)
    }

    pub(crate) fn group_exists(&self, group: &str) -> bool {
        self.lock().groups.contains_key(&group.to_lowercase())
    }

    /// Whether `member` is in `group` directly or through nested groups; `None` when there is
    /// no such group.
    pub(crate) fn is_transitive_member(&self, group: &str, member: &str) -> Option<bool> {
        let tenant = self.lock();
        let group = group.to_lowercase();
        let member = member.to_lowercase();
        tenant.groups.get(&group)?;
        let mut seen = HashSet::new();
        let mut pending = vec![group];
        while let Some(current) = pending.pop() {
            if !seen.insert(current.clone()) {
                continue;
            }
            let Some(entry) = tenant.groups.get(&current) else {
                continue;
            };
            if entry.members.contains(&member) {
                return Some(true);
            }
            pending.extend(
                entry
                    .members
                    .iter()
                    .filter(|m| tenant.groups.contains_key(*m))
                    .cloned(),
            );
        }
        Some(false)
    }

    /// `member` as a direct member of `group`; `Err(())` when there is no such group.
    pub(crate) fn direct_member(&self, group: &str, member: &str) -> Result<Option<Member>, ()> {
        let tenant = self.lock();
        let entry = tenant.groups.get(&group.to_lowercase()).ok_or(())?;
        let member = member.to_lowercase();
        if !entry.members.contains(&member) {
            return Ok(None);
        }
        Ok(Some(Member {
            is_group: tenant.groups.contains_key(&member),
            status: entry
                .status
                .get(&member)
                .cloned()
                .unwrap_or_else(|| "ACTIVE".to_owned()),
            email: member,
        }))
    }

    /// The group whose Cloud Identity id ([`opaque_id`]) is `id`.
    pub(crate) fn group_by_id(&self, id: &str) -> Option<String> {
        self.lock()
            .groups
            .keys()
            .find(|g| opaque_id(g) == id)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tenant> {
        self.0.lock().expect("directory mutex poisoned")
    }
}

/// A stable opaque id for an email (group or member), shaped like Google's: 15 hex digits for
/// a Cloud Identity group name, derived so it survives `set_group` replacing the group.
pub(crate) fn opaque_id(email: &str) -> String {
    let digest = Sha256::digest(email.to_lowercase().as_bytes());
    digest[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..15]
        .to_owned()
}

/// A stable numeric id for a member, shaped like Google's 21-digit ids.
pub(crate) fn numeric_id(email: &str) -> String {
    let digest = Sha256::digest(email.to_lowercase().as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    format!("1{:020}", u64::from_be_bytes(n) % 10u64.pow(19))
}
