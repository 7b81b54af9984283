//! The scopes an API key can carry, as a bit set.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Scope {
    AgentsRead = 1,
    AgentsWrite = 1 << 1,
    AgentsTrigger = 1 << 2,
    AgentsApprove = 1 << 3,
    FlowsRead = 1 << 4,
    FlowsWrite = 1 << 5,
    FlowsTrigger = 1 << 6,
    Admin = 1 << 7,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::AgentsRead,
        Scope::AgentsWrite,
        Scope::AgentsTrigger,
        Scope::AgentsApprove,
        Scope::FlowsRead,
        Scope::FlowsWrite,
        Scope::FlowsTrigger,
        Scope::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::AgentsRead => "agents:read",
            Scope::AgentsWrite => "agents:write",
            Scope::AgentsTrigger => "agents:trigger",
            Scope::AgentsApprove => "agents:approve",
            Scope::FlowsRead => "flows:read",
            Scope::FlowsWrite => "flows:write",
            Scope::FlowsTrigger => "flows:trigger",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u16);

impl Scopes {
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.iter().fold(0, |acc, s| acc | *s as u16))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope as u16 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses scope names; `field` names the request field in the error.
    pub fn parse<S: AsRef<str>>(names: &[S], field: &str) -> Result<Scopes> {
        let mut bits = 0;
        for (i, name) in names.iter().enumerate() {
            let name = name.as_ref().trim();
            let scope = Scope::parse(name).ok_or_else(|| {
                Error::invalid(
                    format!("{field}[{i}]"),
                    format!("unknown scope {name:?}; known: {}", Scopes::all()),
                )
            })?;
            bits |= scope as u16;
        }
        Ok(Scopes(bits))
    }

    pub fn names(self) -> Vec<String> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(|s| s.name().to_owned())
            .collect()
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(" "))
    }
}

impl std::str::FromStr for Scopes {
    type Err = Error;

    /// Space- or comma-separated names, as stored and as given to `agentry keys create --scopes`.
    fn from_str(s: &str) -> Result<Scopes> {
        let names: Vec<&str> = s.split([' ', ',']).filter(|n| !n.is_empty()).collect();
        Scopes::parse(&names, "scopes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let s: Scopes = "agents:read,admin".parse().unwrap();
        assert!(
            s.contains(Scope::Admin)
                && s.contains(Scope::AgentsRead)
                && !s.contains(Scope::AgentsWrite)
        );
        assert_eq!(s.to_string(), "agents:read admin");
        assert!("agents:read nope".parse::<Scopes>().is_err());
        assert_eq!(Scopes::all().names().len(), 8);
    }
}
