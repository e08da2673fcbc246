//! A telemetry event, as in `:telemetry`: a dotted name, numeric measurements, metadata
//! (strings or integers) and the time it happened.
use std::time::SystemTime;

/// A metadata value: a string or an integer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Str(String),
}

impl Value {
    /// The value as a label value.
    pub fn to_label(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Str(s) => s.clone(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i.into())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub time: SystemTime,
    pub measurements: Vec<(&'static str, f64)>,
    pub metadata: Vec<(&'static str, Value)>,
    /// The target set's naming generation (`TargetSet::naming`) when its `target` was
    /// named; 0 when not named from the set.
    pub naming: u64,
}

impl Event {
    pub fn new(name: &'static str, time: SystemTime) -> Event {
        Event {
            name,
            time,
            measurements: Vec::new(),
            metadata: Vec::new(),
            naming: 0,
        }
    }

    /// The event, its target named at the set's naming generation `naming`.
    #[must_use]
    pub fn named_at(mut self, naming: u64) -> Event {
        self.naming = naming;
        self
    }

    #[must_use]
    pub fn measure(mut self, key: &'static str, value: f64) -> Event {
        self.measurements.push((key, value));
        self
    }

    #[must_use]
    pub fn meta(mut self, key: &'static str, value: impl Into<Value>) -> Event {
        self.metadata.push((key, value.into()));
        self
    }

    pub fn measurement(&self, key: &str) -> Option<f64> {
        self.measurements.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}
