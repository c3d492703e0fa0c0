//! HTTP path templates (google/api/http.proto grammar) and the route table
//! that matches request paths against them.

pub(crate) mod percent;
pub mod table;
pub mod template;

pub use table::{Collision, Match, RouteTable, RouteTableBuilder};
pub use template::{PathTemplate, Segment, TemplateError, Variable};
