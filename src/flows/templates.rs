//! The built-in template gallery. A template's graph holds `{{ inputs.* }}` placeholders, filled from
//! the caller's inputs when a flow is created from it; every other placeholder (`{{ input.* }}`,
//! `{{ nodes.* }}`) is kept for the runs to render.

use serde_json::{Value, json};

use super::{
    Flows,
    expr::{self, Vars},
};
use crate::{
    agents::Page,
    error::{Error, Result},
    pb::{CreateFlowFromTemplateRequest, Flow, FlowTemplate, ListFlowTemplatesRequest},
    runs::struct_json,
    store::cursor,
};

pub struct Gallery {
    /// Sorted by slug.
    templates: Vec<FlowTemplate>,
}

fn builtin_json() -> Value {
    json!([
      {
        "slug": "lead-to-sequence",
        "name": "Lead to sequence",
        "description": "When a lead enters a segment: enrich it with an agent, then add it to an email sequence.",
        "category": "sales",
        "input_schema": {
          "type": "object",
          "required": ["enrich_agent_id", "sequence_url"],
          "properties": {
            "enrich_agent_id": {"type": "string", "description": "The agent that enriches the lead"},
            "sequence_url": {"type": "string", "description": "Endpoint that adds a lead to the sequence"}
          }
        },
        "flow_input_schema": {
          "type": "object", "required": ["lead_id"],
          "properties": {"lead_id": {"type": "string"}}
        },
        "graph": {
          "nodes": [
            {"id": "enrich", "name": "Enrich the lead",
             "agent": {"agent_id": "{{ inputs.enrich_agent_id }}", "message": "Enrich lead {{ input.lead_id }}"},
             "retry": {"max_attempts": 3}},
            {"id": "add_to_sequence", "name": "Add to the sequence",
             "tool": {"http": {"method": "POST", "url": "{{ inputs.sequence_url }}",
                               "body": {"lead_id": "{{ input.lead_id }}", "enrichment": "{{ nodes.enrich }}"}}},
             "retry": {"max_attempts": 5}}
          ],
          "edges": [{"from_node_id": "enrich", "to_node_id": "add_to_sequence"}]
        }
      },
      {
        "slug": "approval-gate",
        "name": "Draft, approve, send",
        "description": "An agent drafts; a human approves; the draft is posted to a webhook.",
        "category": "operations",
        "input_schema": {
          "type": "object", "required": ["agent_id", "webhook_url"],
          "properties": {"agent_id": {"type": "string"}, "webhook_url": {"type": "string"}}
        },
        "flow_input_schema": {"type": "object", "properties": {"topic": {"type": "string"}}},
        "graph": {
          "nodes": [
            {"id": "draft", "agent": {"agent_id": "{{ inputs.agent_id }}", "message": "Draft a note about {{ input.topic }}"}},
            {"id": "approve", "approval": {"message": "Send this draft? {{ nodes.draft.content }}"}},
            {"id": "send", "tool": {"http": {"method": "POST", "url": "{{ inputs.webhook_url }}",
                                             "body": {"text": "{{ nodes.draft.content }}"}}}}
          ],
          "edges": [
            {"from_node_id": "draft", "to_node_id": "approve"},
            {"from_node_id": "approve", "to_node_id": "send"}
          ]
        }
      },
      {
        "slug": "triage-and-route",
        "name": "Triage and route",
        "description": "An agent scores an item; high scores go to one endpoint, the rest to another after a delay.",
        "category": "support",
        "input_schema": {
          "type": "object", "required": ["agent_id", "urgent_url", "normal_url"],
          "properties": {"agent_id": {"type": "string"}, "urgent_url": {"type": "string"},
                         "normal_url": {"type": "string"}, "threshold": {"type": "number"}}
        },
        "flow_input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
        "graph": {
          "nodes": [
            {"id": "triage", "agent": {"agent_id": "{{ inputs.agent_id }}", "message": "{{ input.text }}"}},
            {"id": "route", "branch": {"cases": [
              {"condition": "has(nodes.triage.score) && nodes.triage.score >= 8", "target_node_id": "urgent"}],
              "default_target_node_id": "later"}},
            {"id": "urgent", "tool": {"http": {"method": "POST", "url": "{{ inputs.urgent_url }}", "body": "{{ nodes.triage }}"}}},
            {"id": "later", "wait": {"duration": "60s"}},
            {"id": "normal", "tool": {"http": {"method": "POST", "url": "{{ inputs.normal_url }}", "body": "{{ nodes.triage }}"}}}
          ],
          "edges": [
            {"from_node_id": "triage", "to_node_id": "route"},
            {"from_node_id": "route", "to_node_id": "urgent"},
            {"from_node_id": "route", "to_node_id": "later"},
            {"from_node_id": "later", "to_node_id": "normal"}
          ]
        }
      }
    ])
}

impl Gallery {
    pub fn builtin() -> Gallery {
        let mut templates: Vec<FlowTemplate> = serde_json::from_value(builtin_json())
            .expect("the built-in templates are valid FlowTemplate JSON");
        templates.sort_by(|a, b| a.slug.cmp(&b.slug));
        Gallery { templates }
    }

    pub fn get(&self, slug: &str) -> Option<&FlowTemplate> {
        self.templates.iter().find(|t| t.slug == slug)
    }

    pub fn list(&self, req: &ListFlowTemplatesRequest) -> Result<Page<FlowTemplate>> {
        let limit = cursor::page_limit(req.limit)? as usize;
        let after = if req.cursor.is_empty() {
            String::new()
        } else {
            let [s] = cursor::decode::<1>("flow_templates", &req.cursor)?;
            s
        };
        let mut out: Vec<FlowTemplate> = self
            .templates
            .iter()
            .filter(|t| t.slug > after && (req.category.is_empty() || t.category == req.category))
            .take(limit + 1)
            .cloned()
            .collect();
        let next = if out.len() > limit {
            out.truncate(limit);
            cursor::encode("flow_templates", &[&out[limit - 1].slug])
        } else {
            String::new()
        };
        Ok((out, next))
    }
}

/// Fills the `{{ inputs.* }}` placeholders of every string in `v`.
fn fill(v: &Value, inputs: &Value) -> std::result::Result<Value, String> {
    Ok(match v {
        Value::String(s) => fill_str(s, inputs)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| fill(v, inputs))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut out = serde_json::Map::with_capacity(o.len());
            for (k, v) in o {
                out.insert(k.clone(), fill(v, inputs)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn fill_str(s: &str, inputs: &Value) -> std::result::Result<Value, String> {
    let vars = Vars(&[("inputs", inputs)]);
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    while let Some(open) = s[at..].find("{{") {
        let start = at + open;
        let Some(close) = s[start..].find("}}") else {
            break;
        };
        let end = start + close + 2;
        let e = s[start + 2..end - 2].trim();
        if e.starts_with("inputs.") || e == "inputs" {
            let v = expr::to_json(&expr::eval(e, &vars)?)?;
            if start == 0 && end == s.len() {
                return Ok(v);
            }
            out.push_str(&s[at..start]);
            match v {
                Value::String(t) => out.push_str(&t),
                other => out.push_str(&other.to_string()),
            }
        } else {
            out.push_str(&s[at..end]);
        }
        at = end;
    }
    out.push_str(&s[at..]);
    Ok(Value::String(out))
}

impl Flows {
    pub fn list_templates(&self, req: &ListFlowTemplatesRequest) -> Result<Page<FlowTemplate>> {
        self.templates.list(req)
    }

    pub fn template(&self, slug: &str) -> Result<FlowTemplate> {
        self.templates
            .get(slug)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("flow template {slug:?} not found")))
    }

    pub async fn create_from_template(
        &self,
        ws: &str,
        req: &CreateFlowFromTemplateRequest,
    ) -> Result<Flow> {
        if req.template_slug.is_empty() {
            return Err(Error::invalid("template_slug", "is required"));
        }
        let t = self.template(&req.template_slug)?;
        if let Some(schema) = &t.input_schema {
            crate::runs::check_input(schema, req.inputs.as_ref()).map_err(|e| match e {
                Error::InvalidArgument { field, message } => Error::InvalidArgument {
                    field: field.replacen("input", "inputs", 1),
                    message,
                },
                e => e,
            })?;
        }
        let inputs = match struct_json(req.inputs.as_ref()) {
            Value::Null => json!({}),
            v => v,
        };
        let graph =
            serde_json::to_value(t.graph.clone().unwrap_or_default()).map_err(Error::internal)?;
        let graph = fill(&graph, &inputs).map_err(|m| Error::invalid("inputs", m))?;
        let graph = serde_json::from_value(graph).map_err(|e| {
            Error::invalid(
                "inputs",
                format!("the filled template is not a valid graph: {e}"),
            )
        })?;
        let flow = Flow {
            id: if req.flow_id.is_empty() {
                t.slug.clone()
            } else {
                req.flow_id.clone()
            },
            name: if req.name.is_empty() {
                t.name.clone()
            } else {
                req.name.clone()
            },
            description: t.description.clone(),
            input_schema: t.flow_input_schema.clone(),
            graph: Some(graph),
            ..Default::default()
        };
        self.create(ws, flow).await.map_err(|e| match e {
            Error::InvalidArgument { field, message } if field.starts_with("flow.id") => {
                Error::invalid("flow_id", message)
            }
            Error::InvalidArgument { field, message } => {
                Error::invalid("inputs", format!("{field}: {message}"))
            }
            e => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_fill_to_valid_flows() {
        let g = Gallery::builtin();
        assert_eq!(g.templates.len(), 3);
        let inputs = json!({"enrich_agent_id": "enricher", "sequence_url": "https://crm.example/seq",
                            "agent_id": "a1", "webhook_url": "https://hooks.example/x",
                            "urgent_url": "https://x.example/u", "normal_url": "https://x.example/n"});
        for t in &g.templates {
            let graph = serde_json::to_value(t.graph.clone().unwrap()).unwrap();
            let filled = fill(&graph, &inputs).unwrap();
            let graph: crate::pb::FlowGraph = serde_json::from_value(filled.clone()).unwrap();
            super::super::graph::check_graph("graph", &graph).unwrap();
            let text = filled.to_string();
            assert!(!text.contains("inputs."), "{text}");
        }
        let t = g.get("lead-to-sequence").unwrap();
        let filled = fill(
            &serde_json::to_value(t.graph.clone().unwrap()).unwrap(),
            &inputs,
        )
        .unwrap();
        let text = filled.to_string();
        assert!(
            text.contains("\"agentId\":\"enricher\"") || text.contains("\"agent_id\":\"enricher\""),
            "{text}"
        );
        assert!(
            text.contains("{{ input.lead_id }}"),
            "run placeholders stay: {text}"
        );
    }
}
