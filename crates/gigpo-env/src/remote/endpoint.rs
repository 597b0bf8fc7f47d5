//! Where a remote environment lives: an OpenEnv server or a command line, parsed from and
//! written as one string (`openenv+ws://host:port`, `cmd:program args…`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a remote environment lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An OpenEnv server, reached over WebSocket.
    OpenEnv(WsAddress),
    /// A subprocess speaking the protocol over standard input/output.
    Command(CommandLine),
}

/// An OpenEnv server address: `host:port` and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WsAddress {
    /// `host:port`.
    pub authority: String,
    /// Path prefix without the trailing `/ws` (usually empty).
    pub base_path: String,
}

impl WsAddress {
    /// The WebSocket URL of the session endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}/ws", self.authority, self.base_path)
    }

    /// The path of an HTTP route under this server (`/health`, `/metadata`).
    pub fn http_path(&self, route: &str) -> String {
        format!("{}{route}", self.base_path)
    }
}

/// A command line that starts a subprocess environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandLine {
    /// The program (looked up on `PATH` like a shell would).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::OpenEnv(a) => write!(f, "openenv+ws://{}{}", a.authority, a.base_path),
            Endpoint::Command(c) => {
                let words = std::iter::once(&c.program).chain(&c.args);
                let quoted: Vec<String> = words.map(|w| quote_word(w)).collect();
                write!(f, "cmd:{}", quoted.join(" "))
            }
        }
    }
}

fn quote_word(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| word.to_string(), |q| q.into_owned())
}

impl FromStr for Endpoint {
    type Err = String;

    /// Parse `openenv+ws://host:port`, `ws://host:port`, `http://host:port` or `cmd:program args…`
    /// (arguments split like a POSIX shell does, with quotes).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(command) = text.strip_prefix("cmd:") {
            return parse_command(command);
        }
        let rest = text.strip_prefix("openenv+").unwrap_or(text);
        if let Some(addr) = rest
            .strip_prefix("ws://")
            .or_else(|| rest.strip_prefix("http://"))
        {
            return parse_address(addr, text);
        }
        if rest.starts_with("wss://") || rest.starts_with("https://") {
            return Err(format!(
                "endpoint `{text}`: TLS (wss://, https://) is not supported; reach the server \
                 through a local tunnel or proxy and use ws://"
            ));
        }
        Err(format!(
            "endpoint `{text}`: expected `openenv+ws://host:port`, `ws://host:port` or \
             `cmd:program args…`"
        ))
    }
}

fn parse_command(command: &str) -> Result<Endpoint, String> {
    let words = shlex::split(command)
        .ok_or_else(|| format!("endpoint `cmd:{command}`: unbalanced quotes"))?;
    let mut words = words.into_iter();
    let program = words
        .next()
        .ok_or_else(|| "endpoint `cmd:` names no program".to_string())?;
    Ok(Endpoint::Command(CommandLine {
        program,
        args: words.collect(),
    }))
}

/// `host:port` → (host, Some(port)); `[v6]:port` keeps the brackets on the host.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return (authority, None),
    };
    (&authority[..colon], Some(&authority[colon + 1..]))
}

fn parse_address(addr: &str, original: &str) -> Result<Endpoint, String> {
    let (authority, path) = match addr.find('/') {
        Some(i) => (&addr[..i], &addr[i..]),
        None => (addr, ""),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains('?') {
        return Err(format!(
            "endpoint `{original}`: expected host:port after the scheme"
        ));
    }
    let (host, port) = split_host_port(authority);
    if host.is_empty() || host == "[]" {
        return Err(format!(
            "endpoint `{original}`: expected host:port after the scheme"
        ));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("endpoint `{original}`: port `{p}` is not a number 0-65535"))?,
        None => 80,
    };
    let authority = format!("{host}:{port}");
    let mut base = path.trim_end_matches('/');
    base = base.strip_suffix("/ws").unwrap_or(base);
    if base.contains('?') || base.contains('#') {
        return Err(format!(
            "endpoint `{original}`: query strings are not supported"
        ));
    }
    Ok(Endpoint::OpenEnv(WsAddress {
        authority,
        base_path: base.to_string(),
    }))
}

impl TryFrom<String> for Endpoint {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Endpoint> for String {
    fn from(endpoint: Endpoint) -> String {
        endpoint.to_string()
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_websocket_endpoints() {
        let e: Endpoint = "openenv+ws://127.0.0.1:8000".parse().unwrap();
        let Endpoint::OpenEnv(a) = &e else { panic!() };
        assert_eq!(a.ws_url(), "ws://127.0.0.1:8000/ws");
        assert_eq!(a.http_path("/health"), "/health");
        assert_eq!(e.to_string(), "openenv+ws://127.0.0.1:8000");
        let e: Endpoint = "ws://localhost:9/prefix/ws/".parse().unwrap();
        let Endpoint::OpenEnv(a) = &e else { panic!() };
        assert_eq!(a.ws_url(), "ws://localhost:9/prefix/ws");
        assert_eq!(a.http_path("/health"), "/prefix/health");
        let e: Endpoint = "http://[::1]:8000".parse().unwrap();
        let Endpoint::OpenEnv(a) = &e else { panic!() };
        assert_eq!(a.authority, "[::1]:8000");
        let e: Endpoint = "ws://example".parse().unwrap();
        let Endpoint::OpenEnv(a) = &e else { panic!() };
        assert_eq!(a.authority, "example:80");
    }

    #[test]
    fn parses_command_endpoints() {
        let e: Endpoint = r#"cmd:python "my env.py" --size 4"#.parse().unwrap();
        let Endpoint::Command(c) = &e else { panic!() };
        assert_eq!(c.program, "python");
        assert_eq!(c.args, vec!["my env.py", "--size", "4"]);
        assert_eq!(e.to_string(), "cmd:python 'my env.py' --size 4");
    }

    #[test]
    fn rejects_bad_endpoints_with_a_reason() {
        for (text, needle) in [
            ("wss://x:1", "TLS"),
            ("tcp://x:1", "expected"),
            ("ws://x:99999", "port"),
            ("cmd:", "no program"),
            ("cmd:python 'x", "quotes"),
            ("ws://:8000", "host"),
        ] {
            let err = text.parse::<Endpoint>().unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
