//! Compositions compiled against the descriptor pool (DESIGN §8): every
//! method, field path, reference and type is resolved at load into a
//! [`CompositionPlan`]; a request only follows it.

/// One composition, ready to run.
#[derive(Debug)]
pub struct CompositionPlan {
    pub name: String,
}
