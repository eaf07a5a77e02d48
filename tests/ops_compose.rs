//! The compose file parses, names the topology (Redis with AOF, RabbitMQ,
//! a scheduler serving the demo sink, two workers), gives the backends
//! healthchecks, and runs commands the CLI accepts.

use clap::Parser;
use serde_json::Value;
use taskqueue::cli::{Cli, Command, Role};

fn compose() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/compose.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|item| item.as_str().unwrap().to_owned())
        .collect()
}

fn check_role(service: &Value, role: Role) {
    let mut args = vec!["taskqueue".to_owned()];
    args.extend(strings(&service["command"]));
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|err| panic!("{args:?}: {err}"));
    let Command::Serve(serve) = cli.command else {
        panic!("{args:?} is not serve");
    };
    assert_eq!(serve.role, role, "{args:?}");
    let env = &service["environment"];
    assert_eq!(env["TASKQUEUE_REDIS__ADDRESSES"], "redis:6379");
    assert!(
        env["TASKQUEUE_API__TOKEN"].as_str().unwrap().contains(":?"),
        "the token must be required"
    );
    for backend in ["redis", "rabbitmq"] {
        assert_eq!(
            service["depends_on"][backend]["condition"], "service_healthy",
            "{backend}"
        );
    }
}

#[test]
fn the_compose_file_runs_the_topology() {
    let compose = compose();
    let services = &compose["services"];
    let redis = strings(&services["redis"]["command"]);
    assert_eq!(redis, ["redis-server", "--appendonly", "yes"]);
    for backend in ["redis", "rabbitmq"] {
        assert!(
            services[backend]["healthcheck"]["test"].is_array(),
            "{backend} has no healthcheck"
        );
    }
    check_role(&services["scheduler"], Role::Scheduler);
    assert_eq!(
        services["scheduler"]["environment"]["TASKQUEUE_API__SINK"],
        "true"
    );
    assert_eq!(
        strings(&services["scheduler"]["ports"]),
        ["127.0.0.1:8080:8080"]
    );
    check_role(&services["worker"], Role::Worker);
    assert_eq!(services["worker"]["deploy"]["replicas"], 2);
}
