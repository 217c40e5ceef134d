//! The bus inbox: agent messages other nodes hand over the bus, delivered to this node's
//! streams.

use std::sync::Arc;

use cxbridge_connectors::bus::Delivery;
use tokio::sync::{mpsc, watch};

use crate::app::App;

/// Delivers the agent messages other nodes hand over the bus to this node's streams, until
/// `stop` flips.
pub async fn deliver_from_bus(app: Arc<App>, mut inbox: mpsc::Receiver<Delivery>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            d = inbox.recv() => match d {
                Some(d) => {
                    app.hub.publish(&d.agent, &d.frame);
                }
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}
