//! The OTLP resource: what every span, metric point and log record is about. The semantic
//! conventions' service, host and OS attributes (https://opentelemetry.io/docs/specs/semconv/
//! resource/), then the user's (`--otlp-resource-attributes`); `service.name` is
//! `--otlp-service-name` (`OTEL_SERVICE_NAME`) if set, else the user's attributes', else
//! `collector`, as the specification orders them. And the instrumentation scope.
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use super::settings::OtlpArgs;

/// The instrumentation scope of everything the agent exports.
pub const SCOPE: &str = "collector";

pub fn scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Where systemd (and dbus before it) keeps the host's stable id: semconv's `host.id` on
/// Linux, "the machine-id from /etc/machine-id".
const MACHINE_ID: &str = "/etc/machine-id";

pub fn of(args: &OtlpArgs) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("os.type", "linux"),
    ];
    if let Ok(host) = nix::unistd::gethostname() {
        attributes.push(KeyValue::new("host.name", host.to_string_lossy().into_owned()));
    }
    if let Ok(id) = std::fs::read_to_string(MACHINE_ID)
        && !id.trim().is_empty()
    {
        attributes.push(KeyValue::new("host.id", id.trim().to_owned()));
    }
    let users = args.resource_attributes.iter().flat_map(|p| &p.0);
    let users_service = users.clone().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone());
    // Later attributes of the same key win in the builder.
    attributes.extend(users.map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    let service = args
        .service_name
        .clone()
        .or(users_service)
        .unwrap_or_else(|| "collector".into());
    Resource::builder_empty()
        .with_attributes(attributes)
        .with_service_name(service)
        .build()
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use opentelemetry::{Key, Value};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        otlp: OtlpArgs,
    }

    #[test]
    fn the_users_attributes_override_the_agents_but_not_the_service_name() {
        let cli = Cli::try_parse_from([
            "collector",
            "--otlp-service-name",
            "agent",
            "--otlp-resource-attributes",
            "os.type=plan9,service.name=other,team=ops",
        ])
        .unwrap();
        let resource = of(&cli.otlp);
        let get = |k: &'static str| resource.get(&Key::from_static_str(k));
        assert_eq!(get("service.name"), Some(Value::from("agent")));
        assert_eq!(get("os.type"), Some(Value::from("plan9")));
        assert_eq!(get("team"), Some(Value::from("ops")));
        assert_eq!(get("service.version"), Some(Value::from(env!("CARGO_PKG_VERSION"))));
        assert!(get("host.name").is_some());

        let cli = Cli::try_parse_from(["collector", "--otlp-resource-attributes", "service.name=other"]).unwrap();
        let name = of(&cli.otlp).get(&Key::from_static_str("service.name"));
        assert_eq!(name, Some(Value::from("other")), "without --otlp-service-name");
        let cli = Cli::try_parse_from(["collector"]).unwrap();
        let name = of(&cli.otlp).get(&Key::from_static_str("service.name"));
        assert_eq!(name, Some(Value::from("collector")));
    }
}
