//! The read workloads of `AgentService`: GetAgent and ListAgents over gRPC, and GetAgent over the REST
//! shim (`GET /v1/agents/bench-agent`), with the agents they read.

use agentry::pb::{Agent, CreateAgentRequest, GetAgentRequest, ListAgentsRequest};
use tonic::{Code, Status};

use crate::{
    Res, Rpc,
    grpc::{Client, status_text},
    http::{self, HttpConn},
};

pub const GET_AGENT_ID: &str = "bench-agent";
const LIST_AGENTS: usize = 50;
const LIST_LIMIT: i32 = 20;

/// One call of the benchmarked RPC over gRPC; returns how many agents it read.
pub async fn call(client: &mut Client, rpc: Rpc) -> Result<usize, Status> {
    Ok(match rpc {
        Rpc::Run | Rpc::Run50ms | Rpc::HttpRun | Rpc::Flow => {
            return Err(Status::invalid_argument(
                "runs and flows use their own client",
            ));
        }
        Rpc::GetAgent | Rpc::HttpGetAgent => {
            let req = GetAgentRequest {
                id: GET_AGENT_ID.to_owned(),
            };
            client.get_agent(req).await.map(|_| 1)?
        }
        Rpc::ListAgents => {
            let req = ListAgentsRequest {
                limit: LIST_LIMIT,
                ..Default::default()
            };
            client.list_agents(req).await?.into_inner().agents.len()
        }
    })
}

/// Creates the agents the RPC reads (agents left by an earlier run are fine), then calls it once.
pub async fn setup(client: &mut Client, rpc: Rpc, hint: &str) -> Res<()> {
    let ids: Vec<String> = match rpc {
        Rpc::ListAgents => (0..LIST_AGENTS)
            .map(|i| format!("bench-list-{i:02}"))
            .collect(),
        _ => vec![GET_AGENT_ID.to_owned()],
    };
    for id in ids {
        let agent = Agent {
            name: format!("Bench {id}"),
            template: "You are {{ input.role }}.".to_owned(),
            model: "scripted/echo".to_owned(),
            id: id.clone(),
            ..Default::default()
        };
        let req = CreateAgentRequest { agent: Some(agent) };
        match client.create_agent(req).await {
            Err(s) if s.code() != Code::AlreadyExists => {
                let hint = if s.code() == Code::Unauthenticated {
                    hint
                } else {
                    ""
                };
                return Err(format!("creating agent {id}: {}{hint}", status_text(&s)));
            }
            _ => {}
        }
    }
    let n = call(client, rpc).await.map_err(|s| status_text(&s))?;
    if matches!(rpc, Rpc::ListAgents) && n != LIST_LIMIT as usize {
        println!("warning: ListAgents returned {n} agents, not {LIST_LIMIT}");
    }
    Ok(())
}

/// GetAgent over the REST shim on one keep-alive connection: a fixed request, its JSON answer read whole.
pub struct HttpGetAgent {
    conn: HttpConn,
    request: Vec<u8>,
    body: Vec<u8>,
}

impl HttpGetAgent {
    pub fn new(addr: &str, key: &str) -> HttpGetAgent {
        let path = Self::path();
        HttpGetAgent {
            conn: HttpConn::new(addr),
            request: http::request("GET", &path, addr, key, "application/json", None),
            body: Vec::with_capacity(4096),
        }
    }

    pub fn path() -> String {
        format!("/v1/agents/{GET_AGENT_ID}")
    }

    /// One GET; returns how many agents it read.
    pub async fn get(&mut self) -> Res<usize> {
        match self.conn.exchange(&self.request, &mut self.body).await? {
            200 => Ok(1),
            status => Err(http::status_error(status, &self.body)),
        }
    }
}
