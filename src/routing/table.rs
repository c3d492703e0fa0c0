//! STUB — replaced by the routing implementation.
use super::PathTemplate;
use http::Method;

pub struct RouteTableBuilder<T> {
    routes: Vec<(Method, PathTemplate, T)>,
}

pub struct RouteTable<T> {
    routes: Vec<(Method, PathTemplate, T)>,
}

pub enum Match<'a, T> {
    Found { value: &'a T, captures: Vec<String> },
    MethodNotAllowed { allow: Vec<Method> },
    NotFound,
}

/// Two routes with the same HTTP method and the same template shape.
#[derive(Debug)]
pub struct Collision<'a, T> {
    pub existing: &'a T,
}

impl<T> Default for RouteTableBuilder<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> RouteTableBuilder<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, method: Method, template: PathTemplate, value: T) -> Result<(), Collision<'_, T>> {
        self.routes.push((method, template, value));
        Ok(())
    }

    pub fn build(self) -> RouteTable<T> {
        RouteTable { routes: self.routes }
    }
}

impl<T> RouteTable<T> {
    pub fn find<'a>(&'a self, _method: &Method, _path: &str) -> Match<'a, T> {
        let _ = &self.routes;
        Match::NotFound
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
