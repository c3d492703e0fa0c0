//! An upstream call's metadata as the gateway builds it: a handful of
//! fields, kept in order. A `HeaderMap` would allocate its tables and hash
//! every name for four or five fields that are only ever written out one
//! after the other; tonic's streaming client gets a `MetadataMap` made from
//! them ([`CallMetadata::into_metadata_map`]).

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::MetadataMap;

use crate::telemetry::Carrier;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallMetadata(Vec<(HeaderName, HeaderValue)>);

impl CallMetadata {
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Adds a value of `name`; earlier ones stay.
    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.push((name, value));
    }

    /// Sets `name` to `value` alone.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.retain(|(field, _)| *field != name);
        self.0.push((name, value));
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.0.iter().find(|(field, _)| field == name).map(|(_, value)| value)
    }

    /// The fields in the order they were added.
    pub fn fields(&self) -> &[(HeaderName, HeaderValue)] {
        &self.0
    }

    pub fn into_headers(self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.0.len());
        for (name, value) in self.0 {
            headers.append(name, value);
        }
        headers
    }

    pub fn into_metadata_map(self) -> MetadataMap {
        MetadataMap::from_headers(self.into_headers())
    }
}

impl Carrier for CallMetadata {
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        CallMetadata::get(self, name)
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
}

impl FromIterator<(HeaderName, HeaderValue)> for CallMetadata {
    fn from_iter<I: IntoIterator<Item = (HeaderName, HeaderValue)>>(fields: I) -> Self {
        Self(fields.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &'static str) -> HeaderValue {
        HeaderValue::from_static(text)
    }

    #[test]
    fn insert_replaces_every_value_and_append_keeps_them() {
        let a = HeaderName::from_static("a");
        let b = HeaderName::from_static("b");
        let mut metadata = CallMetadata::default();
        metadata.append(a.clone(), value("1"));
        metadata.append(b.clone(), value("2"));
        metadata.append(a.clone(), value("3"));
        assert_eq!(metadata.get(&a), Some(&value("1")));
        metadata.insert(a.clone(), value("4"));
        assert_eq!(metadata.fields(), [(b.clone(), value("2")), (a.clone(), value("4"))]);

        metadata.append(b.clone(), value("5"));
        let map = metadata.into_headers();
        let values: Vec<_> = map.get_all(&b).iter().collect();
        assert_eq!(values, [&value("2"), &value("5")]);
        assert_eq!(map.get(&a), Some(&value("4")));
    }
}
