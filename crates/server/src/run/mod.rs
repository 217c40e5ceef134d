//! The drivers: work that runs on its own beside the HTTP edge — the outbox worker, the
//! sweeper, the pruner, the local CRM index's sync and the bus inbox. Each calls the use
//! cases (`app`) like a route does, and stops when the stop signal flips.

use std::sync::Arc;

use cxbridge_connectors::bus::Delivery;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::app::App;

pub mod bus_inbox;
pub mod crm_index;
pub mod outbox;
pub mod pruner;
pub mod sweeper;

/// The running drivers, until [`Drivers::join`].
pub struct Drivers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drivers {
    /// Starts every driver `app` needs: `bus_inbox` carries the other nodes' agent messages.
    pub fn start(app: &Arc<App>, bus_inbox: Option<mpsc::Receiver<Delivery>>, stop: &watch::Receiver<bool>) -> Self {
        let mut tasks = vec![
            tokio::spawn(outbox::outbox(app.clone(), stop.clone())),
            tokio::spawn(sweeper::sweeper(app.clone(), stop.clone())),
            tokio::spawn(pruner::pruner(app.clone(), stop.clone())),
        ];
        if let Some(inbox) = bus_inbox {
            tasks.push(tokio::spawn(bus_inbox::deliver_from_bus(app.clone(), inbox, stop.clone())));
        }
        if let Some(indexed) = app.indexed.clone() {
            let every = std::time::Duration::from_secs(app.config.crm.sync_interval_secs.max(1));
            tasks.push(tokio::spawn(crm_index::sync(indexed, every, stop.clone())));
        }
        Self { tasks }
    }

    /// Waits for every driver to finish its round after the stop signal.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
