//! Steps that look at containers as Docker itself shows them (the docker CLI, not AIMA's
//! code): how a container was made, and exactly how many this run has.

use super::*;

/// `docker inspect` of one container, as JSON.
fn inspect(container: &str) -> Value {
    let out = Command::new("docker")
        .args(["inspect", container])
        .output()
        .expect("run docker inspect");
    assert!(
        out.status.success(),
        "docker inspect {container} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let all: Value = serde_json::from_slice(&out.stdout).expect("docker inspect prints JSON");
    all[0].clone()
}

#[then(regex = r"^exactly (\d+) containers? of this run (?:is|are) left$")]
async fn exactly_containers_left(w: &mut AimaWorld, count: usize) {
    let label = w.instance_label();
    let left = containers_with_label(&label, false);
    w.note(format!(
        "containers with {label}: {} (expected {count})",
        left.len()
    ));
    assert_eq!(
        left.len(),
        count,
        "expected exactly {count} containers of this run, found {left:?}"
    );
}

#[then(expr = "the container of service {string} is made as the contract says")]
async fn container_per_contract(w: &mut AimaWorld, name: String) {
    let service = w.service(&name);
    let container = format!("aima-{}", service.id);
    let spec = inspect(&container);
    let instance = w.instance.clone().expect("the daemon's instance is known");
    let labels = &spec["Config"]["Labels"];
    let host = &spec["HostConfig"];
    let restart = host["RestartPolicy"]["Name"].as_str().unwrap_or_default();
    let bindings = &host["PortBindings"]["8000/tcp"];
    w.note(format!(
        "{container}: labels {labels}, restart policy {restart:?}, port bindings {bindings}, privileged {}",
        host["Privileged"]
    ));
    assert_eq!(spec["Name"], format!("/{container}"), "container name");
    for (key, value) in [
        ("aima.managed", "true"),
        ("aima.engine", "vllm"),
        ("aima.service", service.id.as_str()),
        ("aima.instance", instance.as_str()),
    ] {
        assert_eq!(labels[key], value, "label {key} of {container}: {labels}");
    }
    // Docker must never bring an engine back behind AIMA's back.
    assert!(
        restart.is_empty() || restart == "no",
        "{container} has the Docker restart policy {restart:?}"
    );
    assert_eq!(
        bindings,
        &serde_json::json!([{"HostIp": "127.0.0.1", "HostPort": service.port.to_string()}]),
        "{container} must publish only port {} on 127.0.0.1",
        service.port
    );
    assert_eq!(host["Privileged"], false, "{container} is privileged");
    assert!(
        host["NetworkMode"] != "host",
        "{container} uses the host network"
    );
}

#[then(expr = "the model of service {string} is mounted read-only")]
async fn model_mounted_read_only(w: &mut AimaWorld, name: String) {
    let service = w.service(&name);
    let container = format!("aima-{}", service.id);
    let spec = inspect(&container);
    let mounts = spec["Mounts"].as_array().cloned().unwrap_or_default();
    w.note(format!(
        "{container} mounts: {}",
        Value::from(mounts.clone())
    ));
    assert_eq!(mounts.len(), 1, "one mount expected: {mounts:?}");
    assert_eq!(mounts[0]["RW"], false, "the model is writable: {mounts:?}");
    // Local models must lie under the daemon's model root, $AIMA_HOME/models.
    let root = std::fs::canonicalize(w.home.path().join("models")).expect("the model root");
    let source = mounts[0]["Source"].as_str().unwrap_or_default();
    assert!(
        std::path::Path::new(source).starts_with(&root),
        "mounted {source}, expected a directory under {}",
        root.display()
    );
}
