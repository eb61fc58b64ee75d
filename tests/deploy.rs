//! The production deployment (compose.yaml, .env.example, nginx/, docs/deploy.md) checked for
//! what an operator relies on.
//!
//! There is no Docker engine on the test machines, so nothing is built or started here. Instead
//! Compose itself resolves the file: `docker-compose --env-file .env.example -f compose.yaml
//! config` (Debian's docker-compose 1.29, installed by scripts/install-test-deps.sh; `docker
//! compose` v2 works too) validates it against the Compose schema, substitutes every `${VAR}`
//! and prints the result. The assertions read that output: published ports, environment,
//! healthchecks, mounts, coturn's flags. The binaries inside the containers are the ones every
//! other test runs directly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

// --- the resolved configuration -----------------------------------------------------------

/// `compose.yaml` as Compose resolves it with `.env.example`, parsed once for all tests.
fn resolved() -> &'static Yaml {
    static CONFIG: OnceLock<Yaml> = OnceLock::new();
    CONFIG.get_or_init(|| parse_yaml(&compose_config()))
}

fn compose_config() -> String {
    let args = ["--env-file", ".env.example", "-f", "compose.yaml", "config"];
    // Compose prefers the caller's environment to the env file: clear every variable the file
    // sets, so the result depends on the repository only (CI may well export RUST_LOG).
    let clean = |mut command: Command| {
        for (name, _) in env_example() {
            command.env_remove(name);
        }
        command.env_remove("COMPOSE_FILE").current_dir(ROOT);
        command
    };
    let mut v1 = clean(Command::new("docker-compose"));
    let output = match v1.args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut v2 = clean(Command::new("docker"));
            match v2.arg("compose").args(args).output() {
                Ok(output) if output.status.success() => output,
                _ => panic!(
                    "docker-compose is not installed (and `docker compose` does not work): run \
                     scripts/install-test-deps.sh, or apt-get install --no-install-recommends \
                     docker-compose"
                ),
            }
        }
        Err(e) => panic!("cannot run docker-compose: {e}"),
    };
    assert!(
        output.status.success(),
        "`docker-compose --env-file .env.example -f compose.yaml config` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("compose prints UTF-8")
}

fn service(name: &str) -> &'static Yaml {
    resolved()
        .get("services")
        .and_then(|services| services.get(name))
        .unwrap_or_else(|| panic!("compose.yaml has no service {name:?}"))
}

fn env_var<'a>(service: &'a Yaml, name: &str) -> &'a str {
    service
        .get("environment")
        .and_then(|env| env.get(name))
        .and_then(Yaml::as_str)
        .unwrap_or_else(|| panic!("{name} is not set in the service's environment"))
}

fn command(service: &Yaml) -> Vec<&str> {
    service
        .get("command")
        .map(|c| c.items().iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

/// A published port, from either the short (`127.0.0.1:8080:8080/tcp`) or the long syntax.
#[derive(Debug, Clone, PartialEq)]
struct Published {
    host_ip: Option<String>,
    published: u16,
    target: u16,
    protocol: String,
}

impl Published {
    fn is_public(&self) -> bool {
        matches!(self.host_ip.as_deref(), None | Some("0.0.0.0") | Some("::"))
    }
}

fn published_ports(service: &Yaml) -> Vec<Published> {
    let mut ports = Vec::new();
    let Some(list) = service.get("ports") else {
        return ports;
    };
    for port in list.items() {
        match port {
            Yaml::Str(short) => ports.extend(parse_short_port(short)),
            long => {
                let field = |key| long.get(key).and_then(Yaml::as_str);
                let number = |key| {
                    field(key)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| panic!("port without a numeric {key}: {long:?}"))
                };
                ports.push(Published {
                    host_ip: field("host_ip").map(str::to_string),
                    published: number("published"),
                    target: number("target"),
                    protocol: field("protocol").unwrap_or("tcp").to_string(),
                });
            }
        }
    }
    ports
}

/// `[IP:]PUBLISHED:TARGET[/PROTOCOL]`, where both ports may be ranges (`7882-7883`).
fn parse_short_port(text: &str) -> Vec<Published> {
    let (spec, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (target, published, host_ip) = match parts[..] {
        [target, published, ip] => (target, published, Some(ip.to_string())),
        [target, published] => (target, published, None),
        [target] => (target, target, None),
        _ => unreachable!("rsplitn yields 1 to 3 parts"),
    };
    let range = |r: &str| -> (u16, u16) {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let parse = |p: &str| p.parse().unwrap_or_else(|_| panic!("bad port {text:?}"));
        (parse(a), parse(b))
    };
    let ((p0, p1), (t0, t1)) = (range(published), range(target));
    assert_eq!(
        p1 - p0,
        t1 - t0,
        "port ranges of different length: {text:?}"
    );
    (0..=p1 - p0)
        .map(|i| Published {
            host_ip: host_ip.clone(),
            published: p0 + i,
            target: t0 + i,
            protocol: protocol.to_string(),
        })
        .collect()
}

/// A mount as `(source, target)`, from the short (`/src:/dst:ro`) or the long syntax.
fn mounts(service: &Yaml) -> Vec<(String, String)> {
    let Some(list) = service.get("volumes") else {
        return Vec::new();
    };
    list.items()
        .iter()
        .map(|volume| match volume {
            Yaml::Str(short) => {
                let mut parts = short.split(':');
                let source = parts.next().unwrap_or_default().to_string();
                let target = parts.next().unwrap_or_default().to_string();
                (source, target)
            }
            long => {
                let field = |key| long.get(key).and_then(Yaml::as_str).unwrap_or("");
                (field("source").to_string(), field("target").to_string())
            }
        })
        .collect()
}

/// `.env.example`'s assignments, in order.
fn env_example() -> Vec<(String, String)> {
    read(".env.example")
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

fn example_value(name: &str) -> String {
    env_example()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!(".env.example does not set {name}"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

// --- what an operator relies on -------------------------------------------------------------

#[test]
fn roomcast_publishes_its_media_ports_and_keeps_http_and_rtmp_local() {
    let roomcast = service("roomcast");
    let first: u16 = env_var(roomcast, "ROOMCAST_RTC_PORT").parse().unwrap();
    let workers: u16 = env_var(roomcast, "ROOMCAST_WORKERS").parse().unwrap();
    let ports = published_ports(roomcast);

    // Worker i listens on first + i and announces that port: each must be published to the
    // internet on the same number.
    let media: Vec<u16> = ports
        .iter()
        .filter(|p| p.protocol == "udp" && p.is_public())
        .inspect(|p| assert_eq!(p.published, p.target, "media port remapped: {p:?}"))
        .map(|p| p.published)
        .collect();
    let expected: Vec<u16> = (first..first + workers).collect();
    assert_eq!(
        media, expected,
        "the published UDP ports must be ROOMCAST_RTC_PORT … + ROOMCAST_WORKERS - 1 \
         (RTC_PORT_LAST = RTC_PORT + RTC_WORKERS - 1 in .env)"
    );

    // Listeners inside the container are on all interfaces (nginx reaches them over the
    // compose network)…
    assert_eq!(env_var(roomcast, "ROOMCAST_HTTP"), "0.0.0.0:8080");
    assert_eq!(env_var(roomcast, "ROOMCAST_RTMP"), "0.0.0.0:1935");
    assert_eq!(env_var(roomcast, "ROOMCAST_RTC_BIND"), "0.0.0.0");
    // …but plain HTTP and plain RTMP are not published to the internet: nginx terminates TLS.
    for p in ports.iter().filter(|p| p.protocol == "tcp") {
        assert!(
            !p.is_public(),
            "roomcast's TCP port {} is published to the internet; only 127.0.0.1 (nginx \
             fronts it): {p:?}",
            p.target
        );
    }
}

#[test]
fn roomcast_gets_every_setting_it_needs_and_nothing_it_ignores() {
    let roomcast = service("roomcast");
    for name in [
        "ROOMCAST_API_KEY",
        "ROOMCAST_API_SECRET",
        "ROOMCAST_PUBLIC_IP",
        "ROOMCAST_TURN_SECRET",
        "ROOMCAST_TURN_URLS",
    ] {
        assert!(!env_var(roomcast, name).is_empty(), "{name} is empty");
    }
    assert_eq!(
        env_var(roomcast, "ROOMCAST_PUBLIC_IP"),
        example_value("PUBLIC_IP")
    );
    assert_eq!(
        env_var(roomcast, "ROOMCAST_API_SECRET"),
        example_value("ROOMCAST_API_SECRET")
    );

    // A misspelt variable is silently ignored by the server: every ROOMCAST_* the container
    // gets must be one the binary declares (`env = "ROOMCAST_…"` in src/).
    let mut sources = String::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("src")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            sources += &std::fs::read_to_string(path).unwrap();
        }
    }
    let Some(Yaml::Map(environment)) = roomcast.get("environment") else {
        panic!("roomcast's environment is not a mapping");
    };
    for (name, _) in environment
        .iter()
        .filter(|(n, _)| n.starts_with("ROOMCAST_"))
    {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "compose.yaml sets {name}, which roomcast does not read (not in src/)"
        );
    }
}

#[test]
fn turn_urls_point_at_the_coturn_listeners() {
    let domain = example_value("DOMAIN");
    let coturn = command(service("coturn"));
    let urls = env_var(service("roomcast"), "ROOMCAST_TURN_URLS");
    let mut schemes = BTreeSet::new();
    for url in urls.split(',') {
        let (scheme, rest) = url.split_once(':').expect("scheme:host:port");
        let host_port = rest.split('?').next().unwrap();
        let expected_port = match scheme {
            "turn" => "3478",
            "turns" => "5349",
            other => panic!("unexpected TURN URL scheme {other:?} in {url}"),
        };
        assert_eq!(host_port, format!("{domain}:{expected_port}"), "{url}");
        schemes.insert(url.rsplit('=').next().unwrap().to_string() + "/" + scheme);
    }
    assert_eq!(
        schemes,
        BTreeSet::from(["tcp/turn".into(), "tcp/turns".into(), "udp/turn".into()]),
        "TURN over UDP, TCP and TLS"
    );
    assert!(coturn.contains(&"--listening-port=3478"), "{coturn:?}");
    assert!(coturn.contains(&"--tls-listening-port=5349"), "{coturn:?}");
}

#[test]
fn coturn_checks_the_credentials_roomcast_issues() {
    let domain = example_value("DOMAIN");
    let coturn = service("coturn");
    let flags = command(coturn);
    let has = |flag: &str| flags.contains(&flag);

    assert!(has("--use-auth-secret"), "{flags:?}");
    let secret = env_var(service("roomcast"), "ROOMCAST_TURN_SECRET");
    assert!(
        has(&format!("--static-auth-secret={secret}")),
        "coturn's static-auth-secret must be roomcast's ROOMCAST_TURN_SECRET: {flags:?}"
    );
    assert!(has(&format!("--realm={domain}")), "{flags:?}");
    assert!(has("--fingerprint") && has("--no-cli"), "{flags:?}");

    // Relay ports: a real range, on the host network (no Docker port proxy for it).
    let port_flag = |name: &str| -> u16 {
        flags
            .iter()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("coturn has no {name}N: {flags:?}"))
    };
    assert!(port_flag("--min-port=") < port_flag("--max-port="));
    assert_eq!(
        coturn.get("network_mode").and_then(Yaml::as_str),
        Some("host")
    );

    // A TURN credential must not open the way into private networks.
    for range in [
        "10.0.0.0-10.255.255.255",
        "172.16.0.0-172.31.255.255",
        "192.168.0.0-192.168.255.255",
        "127.0.0.0-127.255.255.255",
        "169.254.0.0-169.254.255.255",
    ] {
        assert!(
            has(&format!("--denied-peer-ip={range}")),
            "{range} not denied"
        );
    }

    // TURN over TLS uses the Let's Encrypt certificate, which must be mounted.
    let letsencrypt = mounts(coturn)
        .into_iter()
        .find(|(_, target)| target == "/etc/letsencrypt")
        .expect("coturn mounts /etc/letsencrypt");
    assert_eq!(letsencrypt.0, example_value("LETSENCRYPT_DIR"));
    for (flag, file) in [("--cert", "fullchain.pem"), ("--pkey", "privkey.pem")] {
        let expected = format!("{flag}=/etc/letsencrypt/live/{domain}/{file}");
        assert!(has(&expected), "{expected} missing: {flags:?}");
    }
}

#[test]
fn nginx_publishes_https_and_rtmps_once_roomcast_is_healthy() {
    let nginx = service("nginx");
    let public: BTreeSet<u16> = published_ports(nginx)
        .into_iter()
        .filter(|p| p.is_public() && p.protocol == "tcp")
        .inspect(|p| assert_eq!(p.published, p.target))
        .map(|p| p.published)
        .collect();
    assert_eq!(public, BTreeSet::from([80, 443, 1936]));
    let condition = nginx
        .get("depends_on")
        .and_then(|d| d.get("roomcast"))
        .and_then(|r| r.get("condition"))
        .and_then(Yaml::as_str);
    assert_eq!(condition, Some("service_healthy"));
}

#[test]
fn nginx_mounts_the_configuration_in_the_repository() {
    let nginx = service("nginx");
    let mounts = mounts(nginx);
    let repo_file = |target: &str| -> PathBuf {
        let (source, _) = mounts
            .iter()
            .find(|(_, t)| t == target)
            .unwrap_or_else(|| panic!("nginx does not mount {target}: {mounts:?}"));
        let path = PathBuf::from(source);
        assert!(
            path.starts_with(ROOT),
            "{target} should come from the repository, not {source}"
        );
        assert!(
            path.is_file(),
            "{source} (mounted at {target}) does not exist"
        );
        path
    };
    repo_file("/etc/nginx/nginx.conf");
    repo_file("/etc/nginx/roomcast/roomcast.conf");
    repo_file("/etc/nginx/roomcast/roomcast-rtmps.conf");

    // The main file includes where the start command puts the two sites.
    let main = read("nginx/nginx.conf");
    let script = command(nginx).join("\n");
    for (include, written_by_script) in [
        (
            "include /etc/nginx/conf.d/*.conf;",
            "/etc/nginx/conf.d/default.conf",
        ),
        (
            "include /etc/nginx/stream.d/*.conf;",
            "/etc/nginx/stream.d/roomcast-rtmps.conf",
        ),
    ] {
        assert!(main.contains(include), "nginx/nginx.conf lacks `{include}`");
        assert!(script.contains(written_by_script), "{script}");
    }

    // The start command rewrites the site files' placeholders for this deployment (host name,
    // upstream addresses); if the files stop carrying them, the rewrite silently does nothing.
    let site = read("nginx/roomcast.conf");
    let rtmps = read("nginx/roomcast-rtmps.conf");
    for (file, text, placeholder) in [
        ("roomcast.conf", &site, "server_name example.com;"),
        ("roomcast.conf", &site, "/etc/letsencrypt/live/example.com/"),
        ("roomcast.conf", &site, "server 127.0.0.1:8080;"),
        (
            "roomcast-rtmps.conf",
            &rtmps,
            "/etc/letsencrypt/live/example.com/",
        ),
        ("roomcast-rtmps.conf", &rtmps, "server 127.0.0.1:1935;"),
    ] {
        assert!(
            text.contains(placeholder),
            "nginx/{file} no longer contains `{placeholder}`, which compose.yaml's nginx \
             command replaces; update that command"
        );
    }
    let domain = example_value("DOMAIN");
    assert!(
        script.contains(&format!("s/example\\.com/{domain}/g")),
        "{script}"
    );
    assert!(script.contains("roomcast:8080") && script.contains("roomcast:1935"));

    // Certificates and the ACME challenge directory the sites refer to are mounted.
    assert!(mounts.iter().any(|(_, t)| t == "/etc/letsencrypt"));
    let webroot = site
        .lines()
        .find_map(|l| l.trim().strip_prefix("root "))
        .map(|r| r.trim_end_matches(';').trim().to_string())
        .expect("roomcast.conf serves the ACME challenge from a `root`");
    assert!(
        mounts.iter().any(|(_, t)| *t == webroot),
        "nginx does not mount the ACME webroot {webroot}: {mounts:?}"
    );
}

#[test]
fn every_service_has_a_healthcheck() {
    let Some(Yaml::Map(services)) = resolved().get("services") else {
        panic!("no services");
    };
    for (name, service) in services {
        let test: Vec<&str> = service
            .get("healthcheck")
            .and_then(|h| h.get("test"))
            .map(|t| t.items().iter().filter_map(Yaml::as_str).collect())
            .unwrap_or_default();
        assert!(
            !test.is_empty() && test[0] != "NONE",
            "service {name} has no healthcheck"
        );
    }
    let roomcast = service("roomcast")
        .get("healthcheck")
        .and_then(|h| h.get("test"))
        .unwrap();
    let probe: Vec<&str> = roomcast.items().iter().filter_map(Yaml::as_str).collect();
    assert!(
        probe.iter().any(|a| a.ends_with("127.0.0.1:8080/healthz")),
        "roomcast's healthcheck must ask /healthz on its HTTP port: {probe:?}"
    );
}

#[test]
fn env_example_documents_every_variable_compose_uses() {
    // Compose interpolates everything but comments.
    let compose: String = read("compose.yaml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut used = BTreeSet::new();
    let mut rest = compose.as_str();
    while let Some(at) = rest.find("${") {
        let escaped = rest[..at].ends_with('$');
        let name: String = rest[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !escaped && !name.is_empty() {
            used.insert(name);
        }
        rest = &rest[at + 2..];
    }
    let example = read(".env.example");
    let lines: Vec<&str> = example.lines().collect();
    let assigned: BTreeSet<String> = env_example().into_iter().map(|(n, _)| n).collect();
    for name in &used {
        let Some(line) = lines
            .iter()
            .position(|l| l.starts_with(&format!("{name}=")))
        else {
            panic!("compose.yaml uses ${{{name}}}, which .env.example does not set");
        };
        // The variable's group of assignments starts right under a comment explaining it.
        let above = lines[..line]
            .iter()
            .rev()
            .find(|l| !l.contains('=') || l.starts_with('#'))
            .unwrap_or(&"");
        assert!(
            above.starts_with('#'),
            ".env.example sets {name} without a comment explaining it"
        );
    }
    let unused: Vec<_> = assigned.difference(&used).collect();
    assert!(
        unused.is_empty(),
        ".env.example sets variables compose.yaml never uses: {unused:?}"
    );
}

// --- a reader for the block YAML Compose prints ---------------------------------------------

/// Just enough YAML for `docker-compose config` output (PyYAML's block style; Go's yaml.v3 for
/// `docker compose` v2): mappings, sequences (indented or not), plain and quoted scalars,
/// folded multi-line scalars and `|` blocks. No anchors, tags or flow collections other than
/// `{}` and `[]`; every scalar stays a string.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Map(Vec<(String, Yaml)>),
    List(Vec<Yaml>),
    Str(String),
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    fn items(&self) -> &[Yaml] {
        match self {
            Yaml::List(items) => items,
            _ => &[],
        }
    }
}

struct Line {
    indent: usize,
    text: String,
}

fn parse_yaml(text: &str) -> Yaml {
    let mut lines: Vec<Line> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| Line {
            indent: l.len() - l.trim_start().len(),
            text: l.trim().to_string(),
        })
        .collect();
    let mut at = 0;
    let indent = lines.first().map_or(0, |l| l.indent);
    let root = parse_block(&mut lines, &mut at, indent);
    assert_eq!(
        at,
        lines.len(),
        "unparsed YAML from line {}",
        lines[at].text
    );
    root
}

fn is_item(line: &Line) -> bool {
    line.text == "-" || line.text.starts_with("- ")
}

fn parse_block(lines: &mut [Line], at: &mut usize, indent: usize) -> Yaml {
    if is_item(&lines[*at]) {
        parse_list(lines, at, indent)
    } else {
        parse_map(lines, at, indent)
    }
}

/// `key: value` or `key:` at the start of `text`, unless the text is a quoted scalar.
fn split_key(text: &str) -> Option<(&str, &str)> {
    if text.starts_with(['"', '\'']) {
        return None;
    }
    if let Some(key) = text.strip_suffix(':') {
        return (!key.contains(": ")).then_some((key, ""));
    }
    text.split_once(": ")
}

fn parse_map(lines: &mut [Line], at: &mut usize, indent: usize) -> Yaml {
    let mut entries = Vec::new();
    while *at < lines.len() && lines[*at].indent == indent && !is_item(&lines[*at]) {
        let text = lines[*at].text.clone();
        let (key, value) =
            split_key(&text).unwrap_or_else(|| panic!("expected `key: value`, found {text:?}"));
        let key = unquote(key);
        *at += 1;
        let value = if !value.is_empty() {
            parse_scalar(value, lines, at, indent)
        } else if *at < lines.len() && lines[*at].indent > indent {
            let child = lines[*at].indent;
            parse_block(lines, at, child)
        } else if *at < lines.len() && lines[*at].indent == indent && is_item(&lines[*at]) {
            parse_list(lines, at, indent) // PyYAML's indentless sequence
        } else {
            Yaml::Str(String::new()) // null
        };
        entries.push((key, value));
    }
    Yaml::Map(entries)
}

fn parse_list(lines: &mut [Line], at: &mut usize, indent: usize) -> Yaml {
    let mut items = Vec::new();
    while *at < lines.len() && lines[*at].indent == indent && is_item(&lines[*at]) {
        let rest = lines[*at].text[1..].trim_start().to_string();
        if rest.is_empty() {
            *at += 1;
            let child = lines[*at].indent;
            items.push(parse_block(lines, at, child));
        } else if split_key(&rest).is_some() {
            // `- key: value` opens a mapping whose keys line up with `key`.
            lines[*at] = Line {
                indent: indent + 2,
                text: rest,
            };
            items.push(parse_map(lines, at, indent + 2));
        } else {
            *at += 1;
            items.push(parse_scalar(&rest, lines, at, indent));
        }
    }
    Yaml::List(items)
}

/// A scalar starting with `first`; lines indented deeper than its owner continue it.
fn parse_scalar(first: &str, lines: &[Line], at: &mut usize, owner: usize) -> Yaml {
    let mut more = Vec::new();
    while *at < lines.len() && lines[*at].indent > owner {
        more.push(lines[*at].text.as_str());
        *at += 1;
    }
    match first {
        "{}" => return Yaml::Map(Vec::new()),
        "[]" => return Yaml::List(Vec::new()),
        "|" | "|-" | ">" | ">-" => return Yaml::Str(more.join("\n")),
        _ => {}
    }
    if first.starts_with('"') {
        // Double-quoted: a line break folds to a space, unless escaped by a final `\`.
        let mut joined = first.to_string();
        for line in more {
            let trailing = joined.len() - joined.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                joined.pop();
            } else {
                joined.push(' ');
            }
            joined += line;
        }
        return Yaml::Str(unescape_double(&joined));
    }
    let mut joined = first.to_string();
    for line in more {
        joined.push(' ');
        joined += line;
    }
    Yaml::Str(unquote(&joined))
}

fn unquote(text: &str) -> String {
    if text.len() >= 2 && text.starts_with('\'') && text.ends_with('\'') {
        text[1..text.len() - 1].replace("''", "'")
    } else if text.starts_with('"') {
        unescape_double(text)
    } else {
        text.to_string()
    }
}

fn unescape_double(text: &str) -> String {
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other), // \" \\ \/ and an escaped space
            None => {}
        }
    }
    out
}

#[test]
fn the_yaml_reader_reads_what_pyyaml_prints() {
    let doc = parse_yaml(
        "services:\n  a:\n    command:\n    - -n\n    - \"one\\\n      \\ two\\nthree\"\n    ports:\n    \
         - published: 80\n      target: 80\n    - 127.0.0.1:8080:8080/tcp\n    user: '0:0'\n\
         volumes:\n  data: {}\n",
    );
    let a = doc.get("services").unwrap().get("a").unwrap();
    assert_eq!(command(a), ["-n", "one two\nthree"]);
    assert_eq!(a.get("user").and_then(Yaml::as_str), Some("0:0"));
    let ports = published_ports(a);
    assert_eq!(ports[0].published, 80);
    assert_eq!(ports[1].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        doc.get("volumes").unwrap().get("data"),
        Some(&Yaml::Map(vec![]))
    );
    assert_eq!(parse_short_port("7882-7883:7882-7883/udp").len(), 2);
}
