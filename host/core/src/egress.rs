//! Egress: which hosts a plugin may reach through the host's HTTP
//! capability, and the addresses nobody reaches without an explicit grant.
//!
//! **Who may call what.** A plugin's providers declare the hosts they need
//! (`ConnectionProvider::egress`, carried in their descriptors); the
//! operator may grant a plugin hosts instead (`egress = [...]` in its
//! `[plugin.NAME]` table, [`crate::PluginPolicy::egress`]). A plugin may
//! call the hosts its operator grants if it has any grant, else the hosts
//! it declares; a request to any other host is refused.
//!
//! **Addresses no pattern opens.** Whatever the grants, a request whose
//! address is loopback, private, link-local, shared (CGNAT), unspecified,
//! multicast, broadcast, reserved or for documentation, or a cloud
//! metadata address ([`classify`]), is refused unless an operator grant
//! names that host exactly (not `*`, not `*.suffix`, never a
//! declaration). The address checked is the one connected to: an IP in the
//! URL before the request is sent, a name's addresses as they resolve
//! ([`PolicyResolver`]), and every redirect's target ([`redirect_policy`]).
//!
//! Refusals are counted by plugin and reason ([`refusals`]) and logged at
//! `warn`; their text names the plugin and the host, never the URL's path
//! or query.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::Url;

use crate::model::egress::Egress;

/// One egress pattern: which hosts (and ports) it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: any host, any port (never a restricted address).
    Any,
    /// `api.example.com` or `api.example.com:8443`: that name exactly.
    Name {
        /// The name, lower-case, without a trailing dot.
        name: String,
        /// The port, or any.
        port: Option<u16>,
    },
    /// `*.example.com` (optionally `:port`): any name under the suffix,
    /// not the suffix itself.
    Suffix {
        /// The suffix with its leading dot (`.example.com`).
        suffix: String,
        /// The port, or any.
        port: Option<u16>,
    },
    /// `203.0.113.7`, `203.0.113.7:8080`, `2001:db8::1`, `[2001:db8::1]:443`.
    Ip {
        /// The address.
        ip: IpAddr,
        /// The port, or any.
        port: Option<u16>,
    },
}

impl std::str::FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "\"{text}\" is not an egress pattern ({why}); use a host (api.example.com), \
                 host:port, *.suffix, an IP address (optionally with :port, [v6]:port) or *"
            )
        };
        let text = text.trim();
        if text == "*" {
            return Ok(Pattern::Any);
        }
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.contains("://") || text.contains('/') {
            return Err(bad("a pattern names a host, not a URL"));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Pattern::Ip { ip, port: None });
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Pattern::Ip {
                ip: addr.ip(),
                port: Some(addr.port()),
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
                (host, Some(port))
            }
            None => (text, None),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(Pattern::Ip {
                ip: IpAddr::V4(ip),
                port,
            });
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if name.is_empty() || !name.split('.').all(label_ok) {
            return Err(bad(
                "a host is letters, digits, '-' and '.', optionally after \"*.\"",
            ));
        }
        Ok(if wildcard {
            Pattern::Suffix {
                suffix: format!(".{name}"),
                port,
            }
        } else {
            Pattern::Name {
                name: name.to_owned(),
                port,
            }
        })
    }
}

/// A URL's host as patterns see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A name, lower-case, without a trailing dot.
    Name(String),
    /// An IP address.
    Ip(IpAddr),
}

impl Target {
    /// The host of `url`, if it has one.
    pub fn of(url: &Url) -> Option<Self> {
        // The URL parser has normalised the host: an IPv6 address in
        // brackets, an IPv4 address in dotted decimal, a name lower-case.
        let host = url.host_str()?;
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse().ok().map(|ip| Target::Ip(IpAddr::V6(ip)));
        }
        Some(match host.parse::<Ipv4Addr>() {
            Ok(ip) => Target::Ip(IpAddr::V4(ip)),
            Err(_) => Target::Name(host.trim_end_matches('.').to_ascii_lowercase()),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(name) => f.write_str(name),
            Target::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Target::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Pattern {
    /// Whether the pattern allows `target` on `port`.
    pub fn allows(&self, target: &Target, port: u16) -> bool {
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        match (self, target) {
            (Pattern::Any, _) => true,
            (Pattern::Name { name, port: p }, Target::Name(host)) => name == host && port_ok(p),
            (Pattern::Suffix { suffix, port: p }, Target::Name(host)) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str()) && port_ok(p)
            }
            (Pattern::Ip { ip, port: p }, Target::Ip(host)) => {
                canonical(*ip) == canonical(*host) && port_ok(p)
            }
            _ => false,
        }
    }

    /// Whether the pattern names `target` exactly (a name or an address,
    /// not a wildcard), whatever the port: what opens a restricted address
    /// when the operator grants it.
    pub fn names(&self, target: &Target) -> bool {
        match (self, target) {
            (Pattern::Name { name, .. }, Target::Name(host)) => name == host,
            (Pattern::Ip { ip, .. }, Target::Ip(host)) => canonical(*ip) == canonical(*host),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address; others unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Why no pattern opens an address, in words (`"a loopback address"`), or
/// `None` for an ordinary public address. IPv4-mapped and NAT64 IPv6
/// addresses are judged by the IPv4 address they carry.
pub(crate) fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) => {
            "a cloud metadata address"
        }
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() || a == 0 => "an unspecified (\"this network\") address",
        _ if ip.is_private() => "a private address",
        _ if ip.is_link_local() => "a link-local address",
        _ if a == 100 && (64..128).contains(&b) => "a shared (CGNAT) address",
        _ if ip.is_broadcast() => "a broadcast address",
        _ if ip.is_multicast() => "a multicast address",
        _ if ip.is_documentation() => "a documentation address",
        _ if a == 192 && b == 0 && c == 0 => "a reserved (IETF protocol) address",
        _ if a == 198 && (b == 18 || b == 19) => "a reserved (benchmarking) address",
        _ if a >= 240 => "a reserved address",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return classify_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    Some(match segments[0] {
        _ if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) => {
            "a cloud metadata address"
        }
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "an unspecified address",
        // ::/96, the deprecated IPv4-compatible addresses.
        _ if segments[..6] == [0; 6] => "a reserved address",
        s if s & 0xfe00 == 0xfc00 => "a private (unique local) address",
        s if s & 0xffc0 == 0xfe80 => "a link-local address",
        s if s & 0xffc0 == 0xfec0 => "a private (site-local) address",
        s if s & 0xff00 == 0xff00 => "a multicast address",
        0x2001 if segments[1] == 0x0db8 => "a documentation address",
        0x3fff if segments[1] & 0xf000 == 0 => "a documentation address",
        _ => return None,
    })
}

/// Why a request was refused, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reason {
    /// No grant (or declaration) allows the host.
    NotGranted,
    /// The host is, or resolves to, a restricted address no operator
    /// grant names.
    PrivateAddress,
}

impl Reason {
    /// The metric label: `not_granted` or `private_address`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::NotGranted => "not_granted",
            Reason::PrivateAddress => "private_address",
        }
    }
}

/// One host's count of refused requests, by plugin name and reason
/// (monotonic: for counters). Each policy counts into its host's.
#[derive(Debug, Default)]
pub(crate) struct Refusals(Mutex<BTreeMap<(String, Reason), u64>>);

impl Refusals {
    fn count(&self, plugin: &str, reason: Reason) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((plugin.to_owned(), reason)).or_default() += 1;
    }

    /// Every refusal so far, by plugin name and reason. Empty until the
    /// first refusal.
    pub(crate) fn counts(&self) -> Vec<(String, Reason, u64)> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .map(|((plugin, reason), n)| (plugin.clone(), *reason, *n))
            .collect()
    }
}

/// A refused request: the text the provider gets.
#[derive(Debug, Clone)]
pub(crate) struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// A plugin's egress: what it declares, what its operator grants, and
/// the HTTP client that enforces them.
#[derive(Debug)]
pub(crate) struct Policy {
    plugin: String,
    /// Where its refusals are counted: its host's.
    refusals: Arc<Refusals>,
    declared: Vec<Pattern>,
    granted: Option<Vec<Pattern>>,
    client: OnceLock<reqwest::Client>,
}

/// Parses patterns, logging (and dropping) the ones that do not parse: a
/// pattern that cannot be read allows nothing.
fn parse_all(plugin: &str, what: &str, texts: &[String]) -> Vec<Pattern> {
    texts
        .iter()
        .filter_map(|text| match text.parse() {
            Ok(pattern) => Some(pattern),
            Err(e) => {
                tracing::warn!(plugin = %plugin, "ignoring a {what} egress pattern: {e}");
                None
            }
        })
        .collect()
}

impl Policy {
    /// The policy of the plugin `plugin` with these declarations and grants.
    pub(crate) fn new(plugin: &str, egress: &Egress, refusals: Arc<Refusals>) -> Self {
        Self {
            plugin: plugin.to_owned(),
            refusals,
            declared: parse_all(plugin, "declared", &egress.declared),
            granted: egress
                .granted
                .as_ref()
                .map(|g| parse_all(plugin, "granted", g)),
            client: OnceLock::new(),
        }
    }

    /// The plugin it is the policy of.
    pub(crate) fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The patterns in force: the grants if any, else the declarations.
    fn allowed(&self) -> &[Pattern] {
        self.granted.as_deref().unwrap_or(&self.declared)
    }

    /// Whether the patterns in force allow `target` on `port`. Where some
    /// pattern names the host exactly, those patterns alone decide its
    /// ports (`127.0.0.1:8080` with `*` does not open `127.0.0.1:9090`), so
    /// an exact grant opens a restricted address on its own ports only.
    fn permits(&self, target: &Target, port: u16) -> bool {
        let allowed = self.allowed();
        let naming: Vec<&Pattern> = allowed.iter().filter(|p| p.names(target)).collect();
        if naming.is_empty() {
            allowed.iter().any(|p| p.allows(target, port))
        } else {
            naming.iter().any(|p| p.allows(target, port))
        }
    }

    /// Whether an operator grant names `target` exactly (its ports were
    /// checked by [`permits`](Self::permits) before any resolution).
    fn explicitly_granted(&self, target: &Target) -> bool {
        self.granted
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|p| p.names(target))
    }

    /// Counts and logs a refusal, and returns it.
    fn refuse(&self, reason: Reason, message: String) -> Refused {
        self.refusals.count(&self.plugin, reason);
        tracing::warn!(plugin = %self.plugin, reason = reason.as_str(), "{message}");
        Refused(message)
    }

    fn grant_hint(&self) -> String {
        format!("[plugin.{}] egress", self.plugin)
    }

    /// Checks a URL about to be requested (or redirected to): its host
    /// against the patterns in force, and an IP address in it against the
    /// restricted classes. A name's addresses are checked as it resolves.
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let Some(target) = Target::of(url) else {
            return Err(self.refuse(
                Reason::NotGranted,
                format!(
                    "egress refused: plugin \"{}\" may not call a URL without a host",
                    self.plugin
                ),
            ));
        };
        let port = url.port_or_known_default().unwrap_or(0);
        if !self.permits(&target, port) {
            return Err(self.refuse(
                Reason::NotGranted,
                format!(
                    "egress refused: plugin \"{}\" may not call {target}:{port} (not granted; grant it in {})",
                    self.plugin,
                    self.grant_hint()
                ),
            ));
        }
        if let Target::Ip(ip) = target {
            if let Some(class) = classify(ip) {
                if !self.explicitly_granted(&target) {
                    return Err(self.refuse(
                        Reason::PrivateAddress,
                        format!(
                            "egress refused: plugin \"{}\" may not call {target}:{port}: {class}, which needs an explicit grant in {}",
                            self.plugin,
                            self.grant_hint()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Keeps the addresses `name` resolved to that this plugin may reach;
    /// refuses when none is left.
    fn filter_resolved(
        &self,
        name: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let target = Target::Name(name.trim_end_matches('.').to_ascii_lowercase());
        if self.explicitly_granted(&target) {
            return Ok(addrs);
        }
        let (allowed, restricted): (Vec<_>, Vec<_>) =
            addrs.into_iter().partition(|a| classify(a.ip()).is_none());
        match restricted.first() {
            Some(first) if allowed.is_empty() => Err(self.refuse(
                Reason::PrivateAddress,
                format!(
                    "egress refused: plugin \"{}\" may not call {target}: it resolves to {}, {}, which needs an explicit grant in {}",
                    self.plugin,
                    first.ip(),
                    classify(first.ip()).unwrap_or("a restricted address"),
                    self.grant_hint()
                ),
            )),
            _ => Ok(allowed),
        }
    }

    /// The HTTP client for this plugin: it resolves names through the
    /// policy, checks every redirect, and ignores proxy variables.
    pub(crate) fn client(self: &Arc<Self>) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("connhost/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
                // Few idle connections, not kept long: a plugin cannot make
                // the host hold many descriptors between its requests.
                .pool_max_idle_per_host(2)
                .pool_idle_timeout(Duration::from_secs(30))
                .no_proxy()
                .dns_resolver(Arc::new(PolicyResolver(self.clone())))
                .redirect(redirect_policy(self.clone()))
                .build()
                .unwrap_or_else(|e| {
                    // Never a client without the policy: one that cannot
                    // connect anywhere instead.
                    tracing::error!(plugin = %self.plugin, "could not build the HTTP client: {e}");
                    reqwest::Client::builder()
                        .no_proxy()
                        .dns_resolver(Arc::new(PolicyResolver(self.clone())))
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .unwrap_or_default()
                })
        })
    }
}

/// The most redirects followed, as reqwest's default policy.
const MAX_REDIRECTS: usize = 10;

/// Follows a redirect only to a URL the policy allows
/// ([`Policy::check_url`]), at most 10 times (as reqwest's default policy).
pub(crate) fn redirect_policy(policy: Arc<Policy>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("stopped after {MAX_REDIRECTS} redirects"));
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// Resolves names with the system's resolver and keeps only the addresses
/// the plugin may reach ([`Policy`]'s rules for restricted addresses).
#[derive(Debug)]
pub(crate) struct PolicyResolver(Arc<Policy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.filter_resolved(&host, addrs)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The refusal somewhere in `error`'s chain of causes, if a policy check
/// caused it.
pub(crate) fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn name(host: &str) -> Target {
        Target::Name(host.to_owned())
    }

    fn ip(text: &str) -> Target {
        Target::Ip(text.parse().unwrap())
    }

    #[test]
    fn patterns_parse_in_every_form() {
        assert_eq!(pattern("*"), Pattern::Any);
        assert_eq!(
            pattern("API.Example.com."),
            Pattern::Name {
                name: "api.example.com".into(),
                port: None
            }
        );
        assert_eq!(
            pattern("api.example.com:8443"),
            Pattern::Name {
                name: "api.example.com".into(),
                port: Some(8443)
            }
        );
        assert_eq!(
            pattern("*.example.org"),
            Pattern::Suffix {
                suffix: ".example.org".into(),
                port: None
            }
        );
        assert_eq!(
            pattern("127.0.0.1:8080"),
            Pattern::Ip {
                ip: "127.0.0.1".parse().unwrap(),
                port: Some(8080)
            }
        );
        assert_eq!(
            pattern("::1"),
            Pattern::Ip {
                ip: "::1".parse().unwrap(),
                port: None
            }
        );
        assert_eq!(
            pattern("[2001:db8::1]:443"),
            Pattern::Ip {
                ip: "2001:db8::1".parse().unwrap(),
                port: Some(443)
            }
        );
        for bad in [
            "",
            "https://api.example.com",
            "api.example.com/v1",
            "host:0",
            "host:99999",
            "host:port",
            "a b",
            "*.",
            "**.x",
        ] {
            let error = bad.parse::<Pattern>().unwrap_err();
            assert!(error.contains("is not an egress pattern"), "{bad}: {error}");
        }
    }

    #[test]
    fn patterns_match_hosts_and_ports() {
        assert!(pattern("api.example.com").allows(&name("api.example.com"), 443));
        assert!(pattern("api.example.com").allows(&name("api.example.com"), 80));
        assert!(!pattern("api.example.com").allows(&name("evil.example.com"), 443));
        assert!(!pattern("api.example.com").allows(&name("api.example.com.evil"), 443));
        assert!(pattern("api.example.com:8443").allows(&name("api.example.com"), 8443));
        assert!(!pattern("api.example.com:8443").allows(&name("api.example.com"), 443));
        assert!(pattern("*.example.org").allows(&name("a.b.example.org"), 443));
        assert!(!pattern("*.example.org").allows(&name("example.org"), 443));
        assert!(!pattern("*.example.org").allows(&name("badexample.org"), 443));
        assert!(pattern("127.0.0.1:8080").allows(&ip("127.0.0.1"), 8080));
        assert!(!pattern("127.0.0.1:8080").allows(&ip("127.0.0.1"), 8081));
        assert!(pattern("127.0.0.1").allows(&ip("::ffff:127.0.0.1"), 1));
        assert!(!pattern("127.0.0.1").allows(&name("localhost"), 80));
        assert!(pattern("*").allows(&ip("10.0.0.1"), 1));
        assert!(pattern("localhost").names(&name("localhost")));
        assert!(!pattern("*").names(&name("localhost")));
        assert!(!pattern("*.localhost").names(&name("a.localhost")));
    }

    #[test]
    fn restricted_address_classes() {
        let class = |text: &str| classify(text.parse().unwrap());
        for (address, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("fd12::1", "private"),
            ("fc00::1", "private"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.1", "documentation"),
            ("2001:db8::1", "documentation"),
            ("169.254.169.254", "metadata"),
            ("::ffff:169.254.169.254", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("100.100.100.200", "metadata"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("240.0.0.1", "reserved"),
        ] {
            let got = class(address).unwrap_or_else(|| panic!("{address} passed"));
            assert!(got.contains(expected), "{address}: {got}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(class(public), None, "{public}");
        }
    }

    fn policy(declared: &[&str], granted: Option<&[&str]>) -> Policy {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Policy::new(
            "unit-probe",
            &Egress {
                declared: list(declared),
                granted: granted.map(list),
            },
            Arc::default(),
        )
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn grants_replace_declarations_and_only_grants_open_restricted_addresses() {
        let declared = policy(&["api.example.com", "*"], None);
        assert!(declared
            .check_url(&url("https://api.example.com/x"))
            .is_ok());
        let refused = declared
            .check_url(&url("http://127.0.0.1:8080/secret?key=k"))
            .unwrap_err()
            .0;
        assert_eq!(
            refused,
            "egress refused: plugin \"unit-probe\" may not call 127.0.0.1:8080: a loopback address, which needs an explicit grant in [plugin.unit-probe] egress"
        );
        let granted = policy(&["api.example.com"], Some(&["127.0.0.1:8080"]));
        assert!(granted.check_url(&url("http://127.0.0.1:8080/")).is_ok());
        let refused = granted
            .check_url(&url("https://api.example.com/path?key=k"))
            .unwrap_err()
            .0;
        assert_eq!(
            refused,
            "egress refused: plugin \"unit-probe\" may not call api.example.com:443 (not granted; grant it in [plugin.unit-probe] egress)"
        );
        let wildcard = policy(&[], Some(&["*"]));
        assert!(wildcard
            .check_url(&url("http://169.254.169.254/latest"))
            .unwrap_err()
            .0
            .contains("a cloud metadata address"));
        assert!(wildcard.check_url(&url("http://[::1]:80/")).is_err());
        // An exact grant decides its host's ports, wildcards besides.
        let exact = policy(&[], Some(&["127.0.0.1:8080", "api.example.com:8443", "*"]));
        assert!(exact.check_url(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(exact
            .check_url(&url("http://127.0.0.1:9090/"))
            .unwrap_err()
            .0
            .contains("(not granted;"));
        assert!(exact.check_url(&url("https://api.example.com/")).is_err());
        assert!(exact.check_url(&url("https://other.example.com/")).is_ok());
    }

    #[test]
    fn resolved_addresses_are_filtered_unless_the_name_is_granted() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let open = policy(&[], Some(&["*"]));
        let refused = open
            .filter_resolved("localhost", vec![addr("127.0.0.1:0"), addr("[::1]:0")])
            .unwrap_err()
            .0;
        assert_eq!(
            refused,
            "egress refused: plugin \"unit-probe\" may not call localhost: it resolves to 127.0.0.1, a loopback address, which needs an explicit grant in [plugin.unit-probe] egress"
        );
        assert_eq!(
            open.filter_resolved("mixed.example", vec![addr("10.0.0.1:0"), addr("1.1.1.1:0")])
                .unwrap(),
            vec![addr("1.1.1.1:0")]
        );
        let named = policy(&[], Some(&["localhost:8080"]));
        assert_eq!(
            named
                .filter_resolved("localhost", vec![addr("127.0.0.1:0")])
                .unwrap(),
            vec![addr("127.0.0.1:0")]
        );
    }

    #[test]
    fn refusals_are_counted_by_plugin_and_reason() {
        let refusals = Arc::new(Refusals::default());
        let p = Policy::new("unit-counted", &Egress::default(), refusals.clone());
        let _ = p.check_url(&url("https://a.example/"));
        let _ = p.check_url(&url("https://b.example/"));
        assert!(
            Refusals::default().counts().is_empty(),
            "another host's are apart"
        );
        let counted = refusals
            .counts()
            .into_iter()
            .find(|(plugin, reason, _)| plugin == "unit-counted" && *reason == Reason::NotGranted)
            .map(|(_, _, n)| n);
        assert_eq!(counted, Some(2));
    }
}
