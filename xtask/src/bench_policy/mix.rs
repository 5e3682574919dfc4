//! The simulated company: users, their groups, the three policies, and the request mix. Also a
//! model of what authz must decide for each request, so that every answer is checked, and of
//! which (user, group) pairs a decision consults, which bounds the Directory calls.

use std::fmt;

use crate::bench::DOMAIN;

/// The groups the policies name, by index into [`Population::groups`].
pub const ENG: usize = 0;
pub const PLATFORM: usize = 1;
/// Nested: `sre@` is a member of `platform@`, so its members are platform members too.
pub const SRE: usize = 2;
pub const ADMINS: usize = 3;
pub const SECURITY: usize = 4;
/// Groups beyond these five are `team<k>@`, appended to the `docs` policy's any-of list.
pub const NAMED_GROUPS: [&str; 5] = ["eng", "platform", "sre", "admins", "security"];

/// The policies, with the share of requests each gets (out of 100) and how they are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Any of eng@, platform@ (and the extra groups). Named by Envoy's route
    /// (`context_extensions`), path `/docs/mcp`.
    Docs,
    /// platform@; `tools/call` of `delete_*` also needs sre@. Selected by authz's `[[routes]]`
    /// prefix `/grafana`.
    Grafana,
    /// All of admins@ and security@. Selected by the `[[routes]]` prefix `/admin`.
    Admin,
}

pub const POLICIES: [(Policy, u64); 3] = [
    (Policy::Docs, 50),
    (Policy::Grafana, 35),
    (Policy::Admin, 15),
];

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Docs => "docs",
            Policy::Grafana => "grafana",
            Policy::Admin => "admin",
        }
    }

    /// The request path, and the policy Envoy names in `context_extensions`, if it does.
    pub fn route(self) -> (&'static str, Option<&'static str>) {
        match self {
            Policy::Docs => ("/docs/mcp", Some("docs")),
            Policy::Grafana => ("/grafana/mcp", None),
            Policy::Admin => ("/admin/mcp", None),
        }
    }
}

/// An MCP JSON-RPC request, as Envoy's MCP filter reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Initialize,
    ListTools,
    Tool(&'static str),
}

/// The method is uniform over initialize / tools/list / tools/call, the tool uniform over these.
pub const TOOLS: [&str; 3] = ["list_dashboards", "get_dashboard", "delete_dashboard"];
pub const CALLS: [Call; 5] = [
    Call::Initialize,
    Call::ListTools,
    Call::Tool(TOOLS[0]),
    Call::Tool(TOOLS[1]),
    Call::Tool(TOOLS[2]),
];

impl Call {
    pub fn method(self) -> &'static str {
        match self {
            Call::Initialize => "initialize",
            Call::ListTools => "tools/list",
            Call::Tool(_) => "tools/call",
        }
    }

    pub fn tool(self) -> Option<&'static str> {
        match self {
            Call::Tool(tool) => Some(tool),
            _ => None,
        }
    }
}

/// One distinct request: who, which policy, which MCP call. Its index in
/// [`Population::requests`] is `(user × 3 + policy) × 5 + call`.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub user: usize,
    pub policy: Policy,
    pub call: Call,
}

/// Users and their direct group memberships.
#[derive(Debug)]
pub struct Population {
    /// Group emails, [`NAMED_GROUPS`] first.
    pub groups: Vec<String>,
    /// `direct[user][group]`.
    direct: Vec<Vec<bool>>,
}

impl Population {
    /// `users` users over `groups` (≥ 5) groups. Every tenth user is in no group; the others
    /// join eng@ (75%), platform@ directly (45%), sre@ (15%), admins@ (20%), security@ (80% of
    /// admins, 5% of the rest) and each extra group (20%).
    pub fn generate(users: usize, groups: usize, rng: &mut Rng) -> Population {
        let names = (0..groups)
            .map(|g| match NAMED_GROUPS.get(g) {
                Some(name) => format!("{name}@{DOMAIN}"),
                None => format!("team{}@{DOMAIN}", g - NAMED_GROUPS.len() + 1),
            })
            .collect();
        let direct = (0..users)
            .map(|user| {
                let mut member = vec![false; groups];
                if user % 10 == 9 {
                    return member;
                }
                member[ENG] = rng.chance(75);
                member[PLATFORM] = rng.chance(45);
                member[SRE] = rng.chance(15);
                member[ADMINS] = rng.chance(20);
                member[SECURITY] = rng.chance(if member[ADMINS] { 80 } else { 5 });
                for extra in member.iter_mut().skip(NAMED_GROUPS.len()) {
                    *extra = rng.chance(20);
                }
                member
            })
            .collect();
        Population {
            groups: names,
            direct,
        }
    }

    pub fn users(&self) -> usize {
        self.direct.len()
    }

    pub fn email(user: usize) -> String {
        format!("user{user:03}@{DOMAIN}")
    }

    /// The direct members of group `g` (users, and sre@ in platform@), as the Directory holds.
    pub fn members(&self, g: usize) -> Vec<String> {
        let mut members: Vec<String> = (0..self.users())
            .filter(|&user| self.direct[user][g])
            .map(Population::email)
            .collect();
        if g == PLATFORM {
            members.push(self.groups[SRE].clone());
        }
        members
    }

    /// Membership as Google answers it (`hasMember` follows nesting within the domain).
    fn is_member(&self, user: usize, g: usize) -> bool {
        self.direct[user][g] || (g == PLATFORM && self.direct[user][SRE])
    }

    /// Every distinct request, in index order.
    pub fn requests(&self) -> Vec<Request> {
        let mut requests = Vec::with_capacity(self.users() * POLICIES.len() * CALLS.len());
        for user in 0..self.users() {
            for (policy, _) in POLICIES {
                for call in CALLS {
                    requests.push(Request { user, policy, call });
                }
            }
        }
        requests
    }

    /// What authz must answer (true: allowed), and the groups it consults on the way, in the
    /// order authz's policy evaluation asks (any-of stops at the first yes, all-of at the first
    /// no; a rule is only looked at once the policy admits).
    pub fn decide(&self, request: Request) -> (bool, Vec<usize>) {
        let user = request.user;
        let mut consulted = Vec::new();
        let mut ask = |g: usize| {
            consulted.push(g);
            self.is_member(user, g)
        };
        let allowed = match request.policy {
            Policy::Docs => std::iter::once(ENG)
                .chain(std::iter::once(PLATFORM))
                .chain(NAMED_GROUPS.len()..self.groups.len())
                .any(&mut ask),
            Policy::Grafana => {
                ask(PLATFORM)
                    && match request.call.tool() {
                        Some(tool) if tool.starts_with("delete_") => ask(SRE),
                        _ => true,
                    }
            }
            Policy::Admin => ask(ADMINS) && ask(SECURITY),
        };
        (allowed, consulted)
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {} {}",
            Population::email(self.user),
            self.policy.name(),
            self.call.method()
        )?;
        if let Some(tool) = self.call.tool() {
            write!(f, " {tool}")?;
        }
        Ok(())
    }
}

/// The measured mix: `len` request indices, each a uniformly random user, a policy drawn by
/// [`POLICIES`]' weights and a uniformly random call of [`CALLS`]' distribution.
pub fn random_mix(population: &Population, len: usize, rng: &mut Rng) -> Vec<u32> {
    let total: u64 = POLICIES.iter().map(|(_, weight)| weight).sum();
    (0..len)
        .map(|_| {
            let user = rng.below(population.users() as u64) as usize;
            let mut draw = rng.below(total);
            let policy = POLICIES
                .iter()
                .position(|&(_, weight)| {
                    let hit = draw < weight;
                    draw = draw.saturating_sub(weight);
                    hit
                })
                .unwrap_or(0);
            // initialize, tools/list, tools/call each 1/3; the tool uniform among three.
            let call = match rng.below(9) {
                0..=2 => 0,
                3..=5 => 1,
                n => 2 + (n - 6) as usize,
            };
            u32::try_from((user * POLICIES.len() + policy) * CALLS.len() + call)
                .expect("fewer than 4 billion distinct requests")
        })
        .collect()
}

/// `0..n` in a random order.
pub fn shuffled(n: usize, rng: &mut Rng) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n)
        .map(|i| u32::try_from(i).expect("fewer than 4 billion distinct requests"))
        .collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// SplitMix64: a small deterministic generator, so that `--seed` reproduces a run's population
/// and mix.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is negligible for small `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_policies() {
        let mut rng = Rng::new(7);
        let population = Population::generate(200, 6, &mut rng);
        let requests = population.requests();
        assert_eq!(requests.len(), 200 * 3 * 5);
        let allowed = requests.iter().filter(|r| population.decide(**r).0).count();
        assert!(allowed > 0 && allowed < requests.len());
        // User 9 is in no group: refused everywhere, after asking.
        for request in requests.iter().filter(|r| r.user == 9) {
            let (allowed, consulted) = population.decide(*request);
            assert!(!allowed, "{request}");
            assert!(!consulted.is_empty(), "{request}");
        }
        // Indices match the layout random_mix relies on.
        for (i, request) in requests.iter().enumerate() {
            let policy = POLICIES
                .iter()
                .position(|(p, _)| *p == request.policy)
                .unwrap();
            let call = CALLS.iter().position(|c| *c == request.call).unwrap();
            assert_eq!(i, (request.user * 3 + policy) * 5 + call);
        }
        let mix = random_mix(&population, 1000, &mut rng);
        assert!(mix.iter().all(|&i| (i as usize) < requests.len()));
        let mut order = shuffled(100, &mut rng);
        order.sort_unstable();
        assert_eq!(order, (0..100).collect::<Vec<u32>>());
    }
}
