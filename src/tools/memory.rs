//! `memory`: facts a model keeps about the user across runs (`save`, `search`, `list`, `delete`),
//! stored in the `memories` table.
//!
//! Memories belong to one (workspace, user) pair taken from the [`ToolContext`], never from the
//! model's arguments, so a model cannot read or delete another user's memories whatever it is told.
//! A run without a user id gets no memory at all rather than a bucket shared by every anonymous
//! caller. Search is a case-insensitive substring match, newest first: enough for the volumes a
//! user accumulates, and the same on SQLite and PostgreSQL.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError};
use crate::store::{Db, entities::memory, time::now_micros};

pub const MAX_CONTENT_CHARS: usize = 10_000;
pub const SEARCH_LIMIT: u64 = 10;
pub const LIST_LIMIT: u64 = 20;
pub const MAX_LIST_LIMIT: u64 = 100;

pub struct MemoryTool {
    db: Db,
}

impl MemoryTool {
    pub fn new(db: Db) -> MemoryTool {
        MemoryTool { db }
    }
}

/// A user's memories, newest first (what `list` answers, and what a run's system prompt recalls).
pub async fn recent(
    db: &Db,
    workspace_id: &str,
    user_id: &str,
    limit: u64,
) -> Result<Vec<memory::Model>, sea_orm::DbErr> {
    memory::Entity::find()
        .filter(memory::Column::WorkspaceId.eq(workspace_id))
        .filter(memory::Column::UserId.eq(user_id))
        .order_by_desc(memory::Column::CreateTime)
        .order_by_desc(memory::Column::Id)
        .limit(limit)
        .all(db.reader())
        .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Save,
    Search,
    List,
    Delete,
}

#[derive(Debug, Deserialize)]
struct Args {
    action: Action,
    content: Option<String>,
    query: Option<String>,
    id: Option<String>,
    limit: Option<u64>,
    metadata: Option<Value>,
}

fn invalid(msg: impl Into<String>) -> ToolError {
    ToolError::new("invalid_arguments", msg)
}

fn failed(e: impl std::fmt::Display) -> ToolError {
    tracing::error!(error = %e, "memory tool: database error");
    ToolError::new("tool_failed", "the memory store is unavailable")
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn to_json(m: &memory::Model) -> Value {
    let t = crate::store::time::to_timestamp(m.create_time);
    let time = chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    json!({"id": m.id, "content": m.content, "create_time": time})
}

#[tonic::async_trait]
impl Tool for MemoryTool {
    fn name(&self) -> &str {
        "memory"
    }

    fn description(&self) -> &str {
        "Long-term memory about the current user. action=save {content}; search {query}; list; delete {id}."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["save", "search", "list", "delete"]},
                "content": {"type": "string", "description": "save: the fact to remember"},
                "query": {"type": "string", "description": "search: text to look for"},
                "id": {"type": "string", "description": "delete: the memory's id"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "description": "list: how many (default 20)"}
            },
            "required": ["action"],
            "additionalProperties": false
        })
    }

    async fn call(&self, ctx: &ToolContext, arguments: Value) -> Result<Value, ToolError> {
        if ctx.workspace_id.is_empty() || ctx.user_id.is_empty() {
            return Err(ToolError::new(
                "forbidden",
                "memory needs a user: start the run with a user_id",
            ));
        }
        let args: Args = serde_json::from_value(arguments).map_err(|e| invalid(e.to_string()))?;
        let mine = || {
            memory::Entity::find()
                .filter(memory::Column::WorkspaceId.eq(ctx.workspace_id.as_str()))
                .filter(memory::Column::UserId.eq(ctx.user_id.as_str()))
                .order_by_desc(memory::Column::CreateTime)
                .order_by_desc(memory::Column::Id)
        };
        match args.action {
            Action::Save => {
                let content = args
                    .content
                    .as_deref()
                    .map(str::trim)
                    .filter(|c| !c.is_empty());
                let content = content.ok_or_else(|| invalid("save needs a non-empty content"))?;
                if content.chars().count() > MAX_CONTENT_CHARS {
                    return Err(invalid(format!(
                        "content is limited to {MAX_CONTENT_CHARS} characters"
                    )));
                }
                let metadata = match args.metadata {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => return Err(invalid("metadata must be an object")),
                };
                let row = memory::Model {
                    id: uuid::Uuid::now_v7().to_string(),
                    workspace_id: ctx.workspace_id.clone(),
                    user_id: ctx.user_id.clone(),
                    content: content.to_owned(),
                    metadata,
                    create_time: now_micros(),
                };
                let active = memory::ActiveModel {
                    id: Set(row.id.clone()),
                    workspace_id: Set(row.workspace_id.clone()),
                    user_id: Set(row.user_id.clone()),
                    content: Set(row.content.clone()),
                    metadata: Set(row.metadata.clone()),
                    create_time: Set(row.create_time),
                };
                memory::Entity::insert(active)
                    .exec_without_returning(self.db.writer())
                    .await
                    .map_err(failed)?;
                let mut out = to_json(&row);
                out["saved"] = json!(true);
                Ok(out)
            }
            Action::Search => {
                let query = args
                    .query
                    .as_deref()
                    .map(str::trim)
                    .filter(|q| !q.is_empty());
                let query = query.ok_or_else(|| invalid("search needs a non-empty query"))?;
                if query.chars().count() > 200 {
                    return Err(invalid("query is limited to 200 characters"));
                }
                let pattern = format!("%{}%", escape_like(&query.to_lowercase()));
                let rows = mine()
                    .filter(
                        Expr::expr(Func::lower(Expr::col(memory::Column::Content)))
                            .like(LikeExpr::new(pattern).escape('\\')),
                    )
                    .limit(SEARCH_LIMIT)
                    .all(self.db.reader())
                    .await
                    .map_err(failed)?;
                Ok(json!({"memories": rows.iter().map(to_json).collect::<Vec<_>>()}))
            }
            Action::List => {
                let limit = args.limit.unwrap_or(LIST_LIMIT).clamp(1, MAX_LIST_LIMIT);
                let rows = recent(&self.db, &ctx.workspace_id, &ctx.user_id, limit)
                    .await
                    .map_err(failed)?;
                Ok(json!({"memories": rows.iter().map(to_json).collect::<Vec<_>>()}))
            }
            Action::Delete => {
                let id = args
                    .id
                    .as_deref()
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| invalid("delete needs an id"))?;
                let res = memory::Entity::delete_many()
                    .filter(memory::Column::Id.eq(id))
                    .filter(memory::Column::WorkspaceId.eq(ctx.workspace_id.as_str()))
                    .filter(memory::Column::UserId.eq(ctx.user_id.as_str()))
                    .exec(self.db.writer())
                    .await
                    .map_err(failed)?;
                if res.rows_affected == 0 {
                    return Err(ToolError::new(
                        "not_found",
                        format!("no memory {id:?} for this user"),
                    ));
                }
                Ok(json!({"deleted": id}))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(ws: &str, user: &str) -> ToolContext {
        ToolContext {
            workspace_id: ws.into(),
            user_id: user.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn save_search_list_delete_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/m.db?mode=rwc", dir.path().display()))
            .await
            .unwrap();
        let tool = MemoryTool::new(db.clone());
        let (alice, bob, other_ws) = (&ctx("w1", "alice"), &ctx("w1", "bob"), &ctx("w2", "alice"));
        let tool = &tool;
        let save = async |c: &ToolContext, content: &str| {
            tool.call(c, json!({"action": "save", "content": content}))
                .await
        };
        let first = save(alice, "Likes green TEA").await.unwrap();
        save(alice, "Lives in Lisbon").await.unwrap();
        save(alice, "Drinks tea at 5 (100% sure)").await.unwrap();
        save(bob, "Likes tea too").await.unwrap();
        save(other_ws, "tea in another workspace").await.unwrap();

        let found = tool
            .call(alice, json!({"action": "search", "query": "TEA"}))
            .await
            .unwrap();
        let contents: Vec<&str> = found["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(
            contents,
            vec!["Drinks tea at 5 (100% sure)", "Likes green TEA"],
            "newest first, own only"
        );
        let found = tool
            .call(alice, json!({"action": "search", "query": "100%"}))
            .await
            .unwrap();
        assert_eq!(
            found["memories"].as_array().unwrap().len(),
            1,
            "% is literal"
        );
        let found = tool
            .call(alice, json!({"action": "search", "query": "_"}))
            .await
            .unwrap();
        assert_eq!(
            found["memories"].as_array().unwrap().len(),
            0,
            "_ is literal"
        );

        let listed = tool.call(alice, json!({"action": "list"})).await.unwrap();
        assert_eq!(listed["memories"].as_array().unwrap().len(), 3);
        assert_eq!(listed["memories"][2]["id"], first["id"]);

        let id = first["id"].as_str().unwrap();
        let e = tool
            .call(bob, json!({"action": "delete", "id": id}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "not_found", "bob cannot delete alice's memory");
        let e = tool
            .call(other_ws, json!({"action": "delete", "id": id}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "not_found");
        tool.call(alice, json!({"action": "delete", "id": id}))
            .await
            .unwrap();
        let listed = tool
            .call(alice, json!({"action": "list", "limit": 1}))
            .await
            .unwrap();
        assert_eq!(listed["memories"].as_array().unwrap().len(), 1);
        let e = tool
            .call(alice, json!({"action": "delete", "id": id}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "not_found");

        for bad in [
            json!({"action": "save"}),
            json!({"action": "save", "content": "  "}),
            json!({"action": "search"}),
            json!({"action": "forget"}),
            json!({"action": "delete"}),
        ] {
            assert_eq!(
                tool.call(alice, bad.clone()).await.unwrap_err().code,
                "invalid_arguments",
                "{bad}"
            );
        }
        let e = tool
            .call(&ctx("w1", ""), json!({"action": "list"}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "forbidden");
        db.close().await;
    }
}
