//! The compose file parses, names the topology (Redis with AOF, RabbitMQ,
//! a scheduler serving the demo sink, two workers), gives the backends
//! healthchecks, and runs commands the CLI accepts; scripts/cluster.sh
//! runs the same commands and environment; the demo configuration loads;
//! the Dockerfile builds what CI builds and runs as a non-root user.

use clap::Parser;
use serde_json::Value;
use taskqueue::{
    Role,
    cli::{Cli, Command},
};

fn read(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn compose() -> Value {
    serde_saphyr::from_str(&read("docker/compose.yaml")).unwrap()
}

/// Variables every replica gets in compose, and scripts/cluster.sh too.
const REPLICA_ENV: [&str; 5] = [
    "TASKQUEUE_REDIS__ADDRESSES",
    "TASKQUEUE_QUEUE__URL",
    "TASKQUEUE_API__TOKEN",
    "TASKQUEUE_TASKS__CONFIG_FILE",
    "TASKQUEUE_SINK_URL",
];

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
    assert_eq!(
        env["TASKQUEUE_TASKS__CONFIG_FILE"],
        "/etc/taskqueue/cluster-tasks.yaml"
    );
    assert_eq!(env["TASKQUEUE_SINK_URL"], "http://scheduler:8080");
    let mut names: Vec<&str> = env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|name| *name != "TASKQUEUE_API__SINK")
        .collect();
    names.sort_unstable();
    let mut expected = REPLICA_ENV.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "scripts/cluster.sh sets these too");
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

/// The compose command with the image's /etc/taskqueue (the Dockerfile's
/// `COPY config /etc/taskqueue`) as the repository's config/.
fn local_command(service: &Value) -> String {
    strings(&service["command"])
        .iter()
        .map(|arg| arg.replace("/etc/taskqueue/", "\"$here/config/"))
        .map(|arg| {
            if arg.starts_with("\"$here") {
                format!("{arg}\"")
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_cluster_script_runs_the_compose_topology() {
    let script = read("scripts/cluster.sh");
    let compose = compose();
    let services = &compose["services"];
    for (service, role) in [("scheduler", "scheduler"), ("worker", "worker")] {
        let command = local_command(&services[service]);
        let expected = format!("serve --config \"$here/config/taskqueue.yaml\" --role {role}");
        assert_eq!(command, expected, "{service}");
    }
    // The script passes the role per process after the same arguments.
    assert!(
        script.contains(
            r#""$bin" serve --config "$here/config/taskqueue.yaml" --role "$(role_of "$proc")""#
        ),
        "cluster.sh does not run the compose command"
    );
    assert!(script.contains("procs=(scheduler worker1 worker2)"));
    for name in REPLICA_ENV {
        assert!(
            script.contains(&format!("{name}=")),
            "cluster.sh does not set {name}"
        );
    }
    assert!(script.contains("TASKQUEUE_API__SINK=true"));
    assert!(script.contains(r#"TASKQUEUE_TASKS__CONFIG_FILE="$here/config/cluster-tasks.yaml""#));
    assert!(read("docker/Dockerfile").contains("\nCOPY config /etc/taskqueue\n"));
}

#[test]
fn the_demo_configuration_loads() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .args([
            "validate",
            "--config",
            &format!("{root}/config/taskqueue.yaml"),
        ])
        .env(
            "TASKQUEUE_TASKS__CONFIG_FILE",
            format!("{root}/config/cluster-tasks.yaml"),
        )
        .env("TASKQUEUE_SINK_URL", "http://scheduler:8080")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Without the sink's address the tasks file is refused, naming it.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .args([
            "validate",
            "--config",
            &format!("{root}/config/taskqueue.yaml"),
        ])
        .env(
            "TASKQUEUE_TASKS__CONFIG_FILE",
            format!("{root}/config/cluster-tasks.yaml"),
        )
        .env_remove("TASKQUEUE_SINK_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("TASKQUEUE_SINK_URL"), "{text}");
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("docker/Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
            (op.to_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

fn exec_form(value: &str) -> Vec<String> {
    serde_json::from_str(value).unwrap_or_else(|err| panic!("not exec form {value}: {err}"))
}

#[test]
fn the_image_builds_what_ci_builds_and_runs_unprivileged() {
    let steps = dockerfile();
    let builds: Vec<&String> = steps
        .iter()
        .filter(|(op, rest)| op == "RUN" && rest.contains("cargo "))
        .map(|(_, rest)| rest)
        .collect();
    assert_eq!(
        builds,
        ["cargo build --release --locked --bin taskqueue"],
        "one cargo step"
    );
    let ci_run = read(".ci/run");
    let ci: Vec<&str> = ci_run.lines().map(str::trim).collect();
    assert!(
        ci.contains(&builds[0].as_str()),
        ".ci/run must run the image's build: {}",
        builds[0]
    );

    // The runtime stage: the last FROM onwards.
    let runtime_start = steps.iter().rposition(|(op, _)| op == "FROM").unwrap();
    let runtime = &steps[runtime_start..];
    let user = runtime
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, user)| user.clone())
        .expect("the runtime stage sets USER");
    assert!(!["root", "0", "0:0"].contains(&user.as_str()), "{user}");
    assert!(
        runtime.iter().any(|(op, rest)| op == "RUN"
            && rest.contains(&format!("useradd --system --uid 10001 {user}"))),
        "{user} is created"
    );
    assert!(
        runtime.iter().any(|(op, rest)| op == "COPY"
            && rest.starts_with("--from=build ")
            && rest.ends_with(" /usr/local/bin/taskqueue")),
        "the binary comes from the build stage"
    );

    let entrypoint = runtime.iter().find(|(op, _)| op == "ENTRYPOINT").unwrap();
    let cmd = runtime.iter().find(|(op, _)| op == "CMD").unwrap();
    let mut args = exec_form(&entrypoint.1);
    assert_eq!(args, ["taskqueue"]);
    args.extend(exec_form(&cmd.1));
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|err| panic!("{args:?}: {err}"));
    let Command::Serve(serve) = cli.command else {
        panic!("{args:?} is not serve");
    };
    assert_eq!(serve.role, Role::All);
    for path in serve.config.config {
        let local = path.to_str().unwrap().replace("/etc/taskqueue/", "config/");
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(&local)
                .is_file(),
            "{path:?} is not in the image's config/"
        );
    }
}
