//! mmtrace's event model: the catalog, the decoded event, and the event-list syntax.

pub mod catalog;
pub mod container;
pub mod decode;
pub mod derived;
pub mod docs;
pub mod enrich;
pub mod event;
pub mod filter;
pub mod keys;
pub mod line;
pub mod recorded;
pub mod scope;
pub mod select;
pub mod source;
pub mod stack;
pub mod syscalls;
pub mod text;

pub use catalog::{
    by_id, by_name, ArgDef, ArgRole, ArgType, ArgValue, EventDef, RetKind, Role, Tag, Unit, CATALOG,
};
pub use event::Event;
pub use text::TracedText;
