//! Where the objects come from: a directory of manifests (`file`), and
//! the API server (`kube`, next). Both give the same events, which
//! `apply` feeds to the translation model.

pub mod file;
pub mod kube;

use crate::translate::{Applied, Kind, Model};
use file::{Event, Object};

/// Applies one event to the model.
pub fn apply(model: &mut Model, ev: &Event) -> Applied {
    match ev {
        Event::Apply(Object::Service(s)) => model.upsert_service(s),
        Event::Apply(Object::EndpointSlice(e)) => model.upsert_slice(e),
        Event::Apply(Object::Node(n)) => model.upsert_node(n),
        Event::Delete(r) => match r.kind {
            Kind::Service => model.delete_service(&r.namespace, &r.name),
            Kind::EndpointSlice => model.delete_slice(&r.namespace, &r.name),
            Kind::Node => model.delete_node(&r.name),
        },
    }
}
