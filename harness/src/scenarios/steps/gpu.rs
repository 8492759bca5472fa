//! Steps about GPUs: a real NVIDIA GPU on GPU runners, simulated GPUs, placement and
//! recommendations.

use super::*;

#[given("a real NVIDIA GPU")]
async fn real_gpu(w: &mut AimaWorld) {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
        .output();
    let listing = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "no NVIDIA GPU found: nvidia-smi failed: {}; run @gpu scenarios only on a GPU runner",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "no NVIDIA GPU found: cannot run nvidia-smi ({e}); run @gpu scenarios only on a GPU runner"
        ),
    };
    assert!(
        !listing.is_empty(),
        "no NVIDIA GPU found: nvidia-smi lists none"
    );
    w.note(format!("GPUs: {listing}"));
}

#[then("the GPU's name and memory are known")]
async fn gpu_known(w: &mut AimaWorld) {
    let gpus = w
        .evidence
        .iter()
        .find(|e| e.starts_with("GPUs: "))
        .cloned()
        .expect("GPU listing");
    assert!(gpus.contains("MiB"), "no memory size in {gpus}");
}

#[given(expr = "simulated GPUs {string}")]
async fn simulated_gpus(w: &mut AimaWorld, gpus: String) {
    let note = format!("daemon restarted with AIMA_SIMULATE_GPUS={gpus}");
    restart_daemon(w, |w| w.simulate_gpus = Some(gpus), note);
}

#[when(expr = "I ask for a recommendation for model {string}")]
async fn ask_recommendation(w: &mut AimaWorld, model: String) {
    let id = w.model(&model);
    let advice = w
        .aima_json(["service", "recommend", "--model-id", id.as_str()])
        .await;
    w.note(format!("recommend: {}", advice["models"][0]["reason"]));
    w.recommendation = Some(advice);
}

#[then(expr = "the recommendation places model {string} on GPU {int} with a memory utilization")]
async fn recommendation_places(w: &mut AimaWorld, model: String, gpu: u64) {
    let id = w.model(&model);
    let advice = w.recommendation.clone().expect("a recommendation");
    let entry = &advice["models"][0];
    assert_eq!(entry["model_id"], id.as_str(), "{advice}");
    assert_eq!(entry["fits"], true, "{entry}");
    assert_eq!(entry["gpu_index"], gpu, "{entry}");
    let fraction = entry["gpu_memory_utilization"]
        .as_f64()
        .expect("a utilization");
    assert!(fraction > 0.0 && fraction <= 1.0, "{entry}");
    assert!(
        !entry["engine"].as_str().unwrap_or_default().is_empty(),
        "{entry}"
    );
}

#[then(
    expr = "the recommendation refuses model {string} with its estimate and each GPU's memory left"
)]
async fn recommendation_refuses(w: &mut AimaWorld, model: String) {
    let id = w.model(&model);
    let advice = w.recommendation.clone().expect("a recommendation");
    let entry = &advice["models"][0];
    assert_eq!(entry["model_id"], id.as_str(), "{advice}");
    assert_eq!(entry["fits"], false, "{entry}");
    assert_eq!(entry["placements"], Value::Array(Vec::new()), "{entry}");
    let total = entry["estimate"]["total"].as_u64().expect("an estimate");
    let weights = entry["estimate"]["weights"].as_u64().expect("weights");
    assert!(total > weights, "the overhead is counted: {entry}");
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("fits on no GPU"), "{reason}");
    for gpu in advice["devices"]["gpus"].as_array().expect("gpus") {
        let named = format!(
            "GPU {} ({})",
            gpu["index"],
            gpu["name"].as_str().unwrap_or_default()
        );
        assert!(reason.contains(&named), "{named} in {reason}");
    }
}

#[then(expr = "the recommendation shows the estimate of model {string} with its parts")]
async fn recommendation_estimate(w: &mut AimaWorld, model: String) {
    let id = w.model(&model);
    let advice = w.recommendation.clone().expect("a recommendation");
    let entry = &advice["models"][0];
    assert_eq!(entry["model_id"], id.as_str(), "{advice}");
    let e = &entry["estimate"];
    let part = |key: &str| e[key].as_u64().unwrap_or_else(|| panic!("{key} in {e}"));
    assert_eq!(
        part("total"),
        part("weights") + part("kv_cache") + part("overhead"),
        "{e}"
    );
    let gpu = entry["gpu_index"].as_u64().expect("a GPU");
    let share = entry["gpu_memory_utilization"].as_f64().expect("a share");
    let total_mib = advice["devices"]["gpus"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["index"] == gpu))
        .and_then(|g| g["memory_total_mib"].as_u64())
        .expect("the GPU's memory");
    // The share it is given holds the whole estimate.
    #[allow(clippy::cast_precision_loss)]
    let given = share * total_mib as f64 * 1_048_576.0;
    #[allow(clippy::cast_precision_loss)]
    let needed = part("total") as f64;
    assert!(
        given >= needed,
        "{share} of {total_mib} MiB < {needed} bytes: {entry}"
    );
    w.note(format!("recommend {model}: {}", entry["reason"]));
}

#[then("the recommendation shows each GPU's free and claimed memory")]
async fn recommendation_memory(w: &mut AimaWorld) {
    let advice = w.recommendation.clone().expect("a recommendation");
    let gpus = advice["devices"]["gpus"].as_array().expect("gpus").clone();
    for gpu in &gpus {
        w.note(format!(
            "GPU {} {}: {} MiB free, {} MiB claimed",
            gpu["index"], gpu["name"], gpu["memory_free_mib"], gpu["memory_claimed_mib"]
        ));
        assert!(
            gpu["memory_free_mib"].is_u64() && gpu["memory_claimed_mib"].is_u64(),
            "{gpu}"
        );
    }
    assert!(gpus.len() >= 2, "{advice}");
}

#[then(
    expr = "services {string} and {string} are placed on GPU {int} with {float} of its memory claimed"
)]
async fn placed_together(w: &mut AimaWorld, a: String, b: String, gpu: u64, fraction: f64) {
    let devices = w.aima_json(["device", "detect"]).await;
    let entry = devices["gpus"]
        .as_array()
        .expect("gpus")
        .iter()
        .find(|g| g["index"] == gpu)
        .cloned()
        .expect("the GPU");
    let placed: Vec<String> = entry["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let total = entry["memory_total_mib"].as_f64().expect("total");
    let claimed = entry["memory_claimed_mib"].as_f64().expect("claimed");
    w.note(format!(
        "GPU {gpu}: {placed:?}, {claimed} of {total} MiB claimed"
    ));
    for name in [&a, &b] {
        let id = w.service(name).id;
        assert!(
            placed.contains(&id),
            "{id} is not placed on GPU {gpu}: {placed:?}"
        );
    }
    assert!(
        (claimed / total - fraction).abs() < 0.01,
        "claimed {claimed} of {total}"
    );
}

#[then(expr = "only the containers of services {string} and {string} are left")]
async fn only_containers_of_two(w: &mut AimaWorld, a: String, b: String) {
    let ours = containers_with_label(&w.instance_label(), false);
    let mut theirs = containers_with_label(&format!("aima.service={}", w.service(&a).id), false);
    theirs.extend(containers_with_label(
        &format!("aima.service={}", w.service(&b).id),
        false,
    ));
    w.note(format!("containers of this run: {}", ours.len()));
    let (mut ours, mut theirs) = (ours, theirs);
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[then("aima device detect lists the same GPU")]
async fn device_detect_lists_gpu(w: &mut AimaWorld) {
    let devices = w.aima_json(["device", "detect"]).await;
    w.note(format!("aima device detect: {}", devices["gpus"]));
    assert_eq!(devices["simulated"], false);
    assert!(
        !devices["gpus"].as_array().expect("gpus").is_empty(),
        "{devices}"
    );
}
