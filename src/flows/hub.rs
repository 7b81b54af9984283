//! Which flow runs changed, in this process: watchers and the executor wait on it, then read the
//! database (flow runs change a few times per step, so a read per change is cheap and never misses
//! anything). Changes committed by other processes arrive through PostgreSQL NOTIFY.

use std::sync::Arc;

use tokio::sync::broadcast;

pub struct FlowHub {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for FlowHub {
    fn default() -> Self {
        FlowHub {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl FlowHub {
    /// Announces that flow run `id` changed.
    pub fn changed(&self, id: &str) {
        let _ = self.tx.send(id.into());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

/// Waits until `id` changes (or the receiver lagged: anything may have changed).
pub async fn changed(rx: &mut broadcast::Receiver<Arc<str>>, id: &str) {
    loop {
        match rx.recv().await {
            Ok(changed) if &*changed == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}
