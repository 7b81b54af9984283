//! A flow's definition: what is checked when it is written, and the graph's shape as the executor
//! walks it (the incoming and outgoing edges of every node, by index).

use std::collections::HashMap;

use crate::{
    agents::validate::{self, MAX_DESCRIPTION, MAX_NAME},
    error::{Error, Result},
    pb::{
        Flow, FlowGraph, FlowNode, RetryPolicy, flow_node::Kind, tool_node::Action, wait_node::Wait,
    },
    runs::struct_json,
};

use super::expr;

pub const MAX_NODES: usize = 200;
pub const MAX_EDGES: usize = 1000;
/// The most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: i32 = 20;
const MAX_WAIT_SECS: i64 = 366 * 24 * 3600;
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Node ids: `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn is_node_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Checks a flow as it will be stored (`p` is the request field of the flow, e.g. `flow`).
pub fn check_flow(p: &str, f: &Flow) -> Result<()> {
    validate::check_slug(&format!("{p}.id"), &f.id)?;
    if f.name.trim().is_empty() {
        return Err(Error::invalid(format!("{p}.name"), "is required"));
    }
    if f.name.chars().count() > MAX_NAME {
        return Err(Error::invalid(
            format!("{p}.name"),
            "at most 255 characters",
        ));
    }
    if f.description.chars().count() > MAX_DESCRIPTION {
        return Err(Error::invalid(
            format!("{p}.description"),
            "at most 1000 characters",
        ));
    }
    validate::check_schema(&format!("{p}.input_schema"), f.input_schema.as_ref())?;
    let graph = f
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("{p}.graph"), "is required"))?;
    check_graph(&format!("{p}.graph"), graph)
}

pub fn check_graph(p: &str, g: &FlowGraph) -> Result<()> {
    if g.nodes.is_empty() {
        return Err(Error::invalid(format!("{p}.nodes"), "at least one node"));
    }
    if g.nodes.len() > MAX_NODES {
        return Err(Error::invalid(format!("{p}.nodes"), "at most 200 nodes"));
    }
    if g.edges.len() > MAX_EDGES {
        return Err(Error::invalid(format!("{p}.edges"), "at most 1000 edges"));
    }
    let mut index = HashMap::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        if !is_node_id(&n.id) {
            return Err(Error::invalid(
                format!("{p}.nodes[{i}].id"),
                "must match ^[a-z0-9][a-z0-9_-]{0,63}$",
            ));
        }
        if index.insert(n.id.as_str(), i).is_some() {
            return Err(Error::invalid(
                format!("{p}.nodes[{i}].id"),
                format!("duplicate node id {:?}", n.id),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, e) in g.edges.iter().enumerate() {
        let f = format!("{p}.edges[{i}]");
        for (name, id) in [
            ("from_node_id", &e.from_node_id),
            ("to_node_id", &e.to_node_id),
        ] {
            if !index.contains_key(id.as_str()) {
                return Err(Error::invalid(
                    format!("{f}.{name}"),
                    format!("no node {id:?} in the graph"),
                ));
            }
        }
        if e.from_node_id == e.to_node_id {
            return Err(Error::invalid(f, "an edge cannot join a node to itself"));
        }
        if !seen.insert((e.from_node_id.as_str(), e.to_node_id.as_str())) {
            return Err(Error::invalid(f, "duplicate edge"));
        }
        if !e.condition.is_empty() {
            expr::compile(&format!("{f}.condition"), &e.condition)?;
        }
    }
    let shape = Shape::new(g);
    if let Some(n) = shape.cycle() {
        return Err(Error::invalid(
            format!("{p}.edges"),
            format!("the graph has a cycle through node {:?}", g.nodes[n].id),
        ));
    }
    for (i, n) in g.nodes.iter().enumerate() {
        check_node(&format!("{p}.nodes[{i}]"), n, &shape, i, g)?;
    }
    Ok(())
}

fn check_node(p: &str, n: &FlowNode, shape: &Shape, i: usize, g: &FlowGraph) -> Result<()> {
    if n.name.chars().count() > MAX_NAME {
        return Err(Error::invalid(
            format!("{p}.name"),
            "at most 255 characters",
        ));
    }
    if let Some(r) = &n.retry {
        check_retry(&format!("{p}.retry"), r)?;
    }
    if let Some(t) = &n.timeout
        && (t.seconds < 0
            || t.nanos < 0
            || (t.seconds == 0 && t.nanos == 0)
            || t.seconds > MAX_WAIT_SECS)
    {
        return Err(Error::invalid(
            format!("{p}.timeout"),
            "must be positive and at most 366 days",
        ));
    }
    match &n.kind {
        None => Err(Error::invalid(
            p,
            "a node needs one of agent, tool, wait, branch, approval",
        )),
        Some(Kind::Agent(a)) => {
            if a.agent_id.is_empty() {
                return Err(Error::invalid(format!("{p}.agent.agent_id"), "is required"));
            }
            validate::check_slug(&format!("{p}.agent.agent_id"), &a.agent_id)?;
            expr::check_template(
                &format!("{p}.agent.input_mapping"),
                &struct_json(a.input_mapping.as_ref()),
            )?;
            expr::check_template(
                &format!("{p}.agent.message"),
                &serde_json::Value::String(a.message.clone()),
            )
        }
        Some(Kind::Tool(t)) => match &t.action {
            None => Err(Error::invalid(
                format!("{p}.tool"),
                "a tool node needs one of http, mcp",
            )),
            Some(Action::Http(h)) => {
                let f = format!("{p}.tool.http");
                if !HTTP_METHODS.contains(&h.method.as_str()) {
                    return Err(Error::invalid(
                        format!("{f}.method"),
                        "one of GET, POST, PUT, PATCH, DELETE",
                    ));
                }
                if h.url.is_empty() {
                    return Err(Error::invalid(format!("{f}.url"), "is required"));
                }
                expr::check_template(&format!("{f}.url"), &h.url.clone().into())?;
                for (k, v) in &h.headers {
                    expr::check_template(&format!("{f}.headers.{k}"), &v.clone().into())?;
                }
                if let Some(b) = &h.body {
                    let v = serde_json::to_value(b).map_err(Error::internal)?;
                    expr::check_template(&format!("{f}.body"), &v)?;
                }
                Ok(())
            }
            Some(Action::Mcp(m)) => {
                let f = format!("{p}.tool.mcp");
                match reqwest::Url::parse(&m.server) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => {
                        return Err(Error::invalid(
                            format!("{f}.server"),
                            "an http or https URL of an MCP streamable-HTTP endpoint",
                        ));
                    }
                }
                if m.tool.is_empty() {
                    return Err(Error::invalid(format!("{f}.tool"), "is required"));
                }
                expr::check_template(
                    &format!("{f}.arguments"),
                    &struct_json(m.arguments.as_ref()),
                )
            }
        },
        Some(Kind::Wait(w)) => match &w.wait {
            None => Err(Error::invalid(
                format!("{p}.wait"),
                "a wait node needs one of duration, until, until_expression",
            )),
            Some(Wait::Duration(d)) => {
                if d.seconds < 0 || d.nanos < 0 || d.seconds > MAX_WAIT_SECS {
                    return Err(Error::invalid(
                        format!("{p}.wait.duration"),
                        "must be between 0 and 366 days",
                    ));
                }
                Ok(())
            }
            Some(Wait::Until(_)) => Ok(()),
            Some(Wait::UntilExpression(e)) => {
                expr::compile(&format!("{p}.wait.until_expression"), e).map(|_| ())
            }
        },
        Some(Kind::Branch(b)) => {
            let f = format!("{p}.branch");
            let targets: Vec<&str> = shape.outgoing[i]
                .iter()
                .map(|&e| g.edges[e].to_node_id.as_str())
                .collect();
            for (j, c) in b.cases.iter().enumerate() {
                if c.condition.is_empty() {
                    return Err(Error::invalid(
                        format!("{f}.cases[{j}].condition"),
                        "is required",
                    ));
                }
                expr::compile(&format!("{f}.cases[{j}].condition"), &c.condition)?;
                if !targets.contains(&c.target_node_id.as_str()) {
                    return Err(Error::invalid(
                        format!("{f}.cases[{j}].target_node_id"),
                        "must be the target of one of this node's outgoing edges",
                    ));
                }
            }
            if !b.default_target_node_id.is_empty()
                && !targets.contains(&b.default_target_node_id.as_str())
            {
                return Err(Error::invalid(
                    format!("{f}.default_target_node_id"),
                    "must be the target of one of this node's outgoing edges",
                ));
            }
            Ok(())
        }
        Some(Kind::Approval(a)) => {
            expr::check_template(&format!("{p}.approval.message"), &a.message.clone().into())?;
            if a.approvers.iter().any(|s| s.is_empty() || s.len() > 255) {
                return Err(Error::invalid(
                    format!("{p}.approval.approvers"),
                    "names of 1 to 255 characters",
                ));
            }
            Ok(())
        }
    }
}

fn check_retry(p: &str, r: &RetryPolicy) -> Result<()> {
    if !(0..=MAX_ATTEMPTS).contains(&r.max_attempts) {
        return Err(Error::invalid(
            format!("{p}.max_attempts"),
            "must be between 0 and 20",
        ));
    }
    for (name, d) in [
        ("initial_backoff", &r.initial_backoff),
        ("max_backoff", &r.max_backoff),
    ] {
        if let Some(d) = d
            && (d.seconds < 0 || d.nanos < 0 || d.seconds > 24 * 3600)
        {
            return Err(Error::invalid(
                format!("{p}.{name}"),
                "must be between 0 and 24 hours",
            ));
        }
    }
    if !(r.backoff_multiplier == 0.0 || (1.0..=10.0).contains(&r.backoff_multiplier)) {
        return Err(Error::invalid(
            format!("{p}.backoff_multiplier"),
            "must be 0 (meaning 2) or between 1 and 10",
        ));
    }
    Ok(())
}

/// The edges of every node, by node index.
pub struct Shape {
    pub index: HashMap<String, usize>,
    /// Edge indexes into `graph.edges`.
    pub incoming: Vec<Vec<usize>>,
    pub outgoing: Vec<Vec<usize>>,
    /// Source and target node index of every edge.
    pub ends: Vec<(usize, usize)>,
}

impl Shape {
    /// Builds the shape of a checked graph (edges naming unknown nodes are ignored).
    pub fn new(g: &FlowGraph) -> Shape {
        let index: HashMap<String, usize> = g
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let mut incoming = vec![Vec::new(); g.nodes.len()];
        let mut outgoing = vec![Vec::new(); g.nodes.len()];
        let mut ends = Vec::with_capacity(g.edges.len());
        for (e, edge) in g.edges.iter().enumerate() {
            match (index.get(&edge.from_node_id), index.get(&edge.to_node_id)) {
                (Some(&f), Some(&t)) => {
                    outgoing[f].push(e);
                    incoming[t].push(e);
                    ends.push((f, t));
                }
                _ => ends.push((usize::MAX, usize::MAX)),
            }
        }
        Shape {
            index,
            incoming,
            outgoing,
            ends,
        }
    }

    /// A node on a cycle, if there is one (Kahn's algorithm).
    fn cycle(&self) -> Option<usize> {
        let n = self.incoming.len();
        let mut indegree: Vec<usize> = self.incoming.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut done = 0;
        while let Some(i) = ready.pop() {
            done += 1;
            for &e in &self.outgoing[i] {
                let t = self.ends[e].1;
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.push(t);
                }
            }
        }
        (done < n).then(|| (0..n).find(|&i| indegree[i] > 0).unwrap_or(0))
    }
}

/// The node of a flow graph by id.
pub fn node<'a>(g: &'a FlowGraph, shape: &Shape, id: &str) -> Option<&'a FlowNode> {
    shape.index.get(id).map(|&i| &g.nodes[i])
}
