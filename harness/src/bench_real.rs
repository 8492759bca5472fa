//! The real-engine rows of `harness bench`: llama.cpp's server and vLLM built for the CPU
//! (`harness image build`), with the tiny real models. Start to healthy and stop through
//! AIMA against `docker run` / `docker stop` + `docker rm` of the same image, command,
//! environment, mounts and shared memory (read off the container AIMA made), interleaved;
//! and generation speed straight from the engine's port against through the gateway.
//! An engine whose image is not built is skipped, saying how to build it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::bench::{BenchOptions, BenchResults, Daemon, median, ms, port_free, round, wait_until};
use crate::engine_images::{EngineImage, LLAMACPP_CPU, VLLM_CPU};

/// One real engine as the bench runs it.
struct Real {
    /// The catalog's name, as `--engine-type` takes it.
    engine: &'static str,
    image: EngineImage,
    /// The tiny model's directory under the models `harness model build` writes.
    model: &'static str,
    /// One thread, as on a shared 2-core machine.
    env: &'static str,
    /// Start/stop cycles (a full run, then `--quick`).
    cycles: (usize, usize),
}

const ENGINES: [Real; 2] = [
    Real {
        engine: "llamacpp",
        image: LLAMACPP_CPU,
        model: "tiny-llama",
        env: "LLAMA_ARG_THREADS=1",
        cycles: (10, 5),
    },
    Real {
        engine: "vllm",
        image: VLLM_CPU,
        model: "tiny-llama-hf",
        env: "OMP_NUM_THREADS=1",
        cycles: (3, 2),
    },
];

/// Generation requests per side for the tokens-per-second rows.
const GENERATIONS: usize = 6;
/// Tokens each generation asks for (the end of text ignored, so each gives as many).
const TOKENS: u64 = 256;

pub(crate) async fn run(
    options: &BenchOptions,
    base: u16,
    results: &mut BenchResults,
) -> anyhow::Result<()> {
    let docker = crate::docker::connect().await?;
    let models = tempfile::Builder::new()
        .prefix("aima-bench-models-")
        .tempdir()?;
    crate::engine_images::build_models(models.path())?;
    for (i, real) in ENGINES.iter().enumerate() {
        if real.image.current(&docker).await?.is_none() {
            println!(
                "real engine {}: skipped, {} is not built from its current recipe; build it with `cargo run -p harness --bin harness -- image build --engine {}`",
                real.engine, real.image.tag, real.image.engine
            );
            continue;
        }
        let ports = base + i as u16 * 20;
        measure(options, real, models.path(), ports, results)
            .await
            .with_context(|| format!("real engine {}", real.engine))?;
    }
    Ok(())
}

/// The health path of both engines in AIMA's catalog.
const HEALTH_PATH: &str = "/health";

/// What AIMA gave the engine's container, to run the same by hand.
struct Recipe {
    args: Vec<String>,
}

async fn measure(
    options: &BenchOptions,
    real: &Real,
    models: &Path,
    base: u16,
    results: &mut BenchResults,
) -> anyhow::Result<()> {
    let image_var = format!("AIMA_ENGINE_IMAGE_{}", real.engine.to_uppercase());
    let roots = models.display().to_string();
    let daemon = tokio::task::block_in_place(|| {
        Daemon::start(
            options,
            (base, base + 9),
            &[
                (image_var.as_str(), real.image.tag),
                ("AIMA_MODEL_ROOTS", roots.as_str()),
            ],
        )
    })?;
    let path = models.join(real.model).display().to_string();
    let model = daemon.cli_json(&[
        "model", "create", "--name", real.model, "--source", "local", "--path", &path,
    ])?;
    let model_id = model["id"].as_str().unwrap_or_default().to_owned();
    let service = daemon.cli_json(&[
        "service",
        "create",
        "--model-id",
        &model_id,
        "--engine-type",
        real.engine,
        "--env",
        real.env,
    ])?;
    let id = service["id"].as_str().unwrap_or_default().to_owned();
    let engine_port = service["port"].as_u64().unwrap_or_default() as u16;
    let raw_port = base + 15;
    let raw_name = format!("bench-raw-{}-{}", real.engine, std::process::id());
    let raw_label = crate::ledger::run_label();
    let cycles = if options.quick {
        real.cycles.1
    } else {
        real.cycles.0
    };
    let (mut aima_start, mut aima_stop, mut raw_start, mut raw_stop) =
        (vec![], vec![], vec![], vec![]);
    let mut recipe = None;
    for cycle in 0..cycles {
        let (ok, took, err) =
            tokio::task::block_in_place(|| daemon.timed(&["service", "start", &id, "--wait"]))?;
        ensure!(ok, "aima start failed: {err}");
        aima_start.push(ms(took));
        if recipe.is_none() {
            recipe = Some(read_recipe(
                &daemon, &id, real, raw_port, &raw_name, &raw_label,
            )?);
        }
        if cycle == 0 {
            tokens_per_second(&daemon, real, engine_port, results).await?;
        }
        let (ok, took, err) =
            tokio::task::block_in_place(|| daemon.timed(&["service", "stop", &id]))?;
        ensure!(ok, "aima stop failed: {err}");
        aima_stop.push(ms(took));
        let recipe = recipe.as_ref().context("the container's recipe")?;

        let started = Instant::now();
        let out = Command::new("docker").args(&recipe.args).output()?;
        ensure!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = format!("http://127.0.0.1:{raw_port}{HEALTH_PATH}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        while !http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the raw container never answered"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        raw_start.push(ms(started.elapsed()));
        // AIMA's stop is a graceful stop, then removal: the same by hand.
        let started = Instant::now();
        for args in [vec!["stop", "-t", "30", &raw_name], vec!["rm", &raw_name]] {
            let out = Command::new("docker").args(&args).output()?;
            ensure!(
                out.status.success(),
                "docker {}: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::task::block_in_place(|| {
            wait_until(Duration::from_secs(10), || port_free(raw_port))
        })?;
        raw_stop.push(ms(started.elapsed()));
    }
    let key = |name: &str| format!("real_{}_{name}", real.engine);
    let (start_aima, start_raw) = (median(&mut aima_start), median(&mut raw_start));
    let (stop_aima, stop_raw) = (median(&mut aima_stop), median(&mut raw_stop));
    results.insert(key("start_aima_ms"), json!(round(start_aima)));
    results.insert(key("start_raw_ms"), json!(round(start_raw)));
    results.insert(key("start_ratio"), json!(round(start_aima / start_raw)));
    results.insert(key("stop_aima_ms"), json!(round(stop_aima)));
    results.insert(key("stop_raw_ms"), json!(round(stop_raw)));
    results.insert(key("stop_ratio"), json!(round(stop_aima / stop_raw)));
    results.insert(key("cycles"), json!(cycles));
    crate::ledger::remove_labelled(&format!("aima.instance={}", daemon.instance));
    crate::ledger::remove_labelled(&raw_label);
    Ok(())
}

/// `docker run` arguments for the same container AIMA made, on `raw_port`.
fn read_recipe(
    daemon: &Daemon,
    id: &str,
    real: &Real,
    raw_port: u16,
    name: &str,
    label: &str,
) -> anyhow::Result<Recipe> {
    let service = daemon.cli_json(&["service", "get", id])?;
    let container = service["container_id"].as_str().unwrap_or_default();
    let out = Command::new("docker")
        .args(["inspect", container])
        .output()?;
    ensure!(out.status.success(), "docker inspect {container}");
    let inspected: Value = serde_json::from_slice(&out.stdout)?;
    let c = &inspected[0];
    // The port AIMA published: `8080/tcp` → 8080.
    let container_port = c["HostConfig"]["PortBindings"]
        .as_object()
        .and_then(|ports| ports.keys().next())
        .and_then(|key| key.split('/').next()?.parse::<u16>().ok())
        .context("the container publishes no port")?;
    let mut args: Vec<String> = ["run", "-d", "--name", name, "--label", label, "-p"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(format!("{raw_port}:{container_port}"));
    for bind in c["HostConfig"]["Binds"].as_array().into_iter().flatten() {
        args.extend([
            "-v".to_owned(),
            bind.as_str().unwrap_or_default().to_owned(),
        ]);
    }
    for mount in c["HostConfig"]["Mounts"].as_array().into_iter().flatten() {
        args.extend([
            "--mount".to_owned(),
            format!(
                "type=bind,source={},target={}{}",
                mount["Source"].as_str().unwrap_or_default(),
                mount["Target"].as_str().unwrap_or_default(),
                if mount["ReadOnly"] == true {
                    ",readonly"
                } else {
                    ""
                }
            ),
        ]);
    }
    if let Some(shm) = c["HostConfig"]["ShmSize"].as_u64().filter(|s| *s > 0) {
        args.push(format!("--shm-size={shm}"));
    }
    // The service's own environment (the image's is the image's).
    args.extend(["-e".to_owned(), real.env.to_owned()]);
    args.push(real.image.tag.to_owned());
    for arg in c["Config"]["Cmd"].as_array().into_iter().flatten() {
        args.push(arg.as_str().unwrap_or_default().to_owned());
    }
    Ok(Recipe { args })
}

/// Completion tokens per second, straight from the engine and through the gateway,
/// alternating, `GENERATIONS` requests of `TOKENS` tokens each.
async fn tokens_per_second(
    daemon: &Daemon,
    real: &Real,
    engine_port: u16,
    results: &mut BenchResults,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let body = json!({
        "model": real.model,
        "messages": [{"role": "user", "content": "Count to a hundred."}],
        "max_tokens": TOKENS,
        "ignore_eos": true,
    });
    let direct_url = format!("http://127.0.0.1:{engine_port}/v1/chat/completions");
    let gateway_url = daemon.url("/v1/chat/completions");
    let (mut direct, mut gateway) = ((0u64, 0.0f64), (0u64, 0.0f64));
    // One each to warm up, then alternating.
    for (turn, url) in std::iter::repeat_n([&direct_url, &gateway_url], GENERATIONS + 1)
        .flatten()
        .enumerate()
    {
        let started = Instant::now();
        let answer: Value = http
            .post(url.as_str())
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let took = started.elapsed().as_secs_f64();
        let tokens = answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        ensure!(tokens > 0, "no completion tokens in {answer}");
        if turn >= 2 {
            let side = if url == &direct_url {
                &mut direct
            } else {
                &mut gateway
            };
            side.0 += tokens;
            side.1 += took;
        }
    }
    let key = |name: &str| format!("real_{}_{name}", real.engine);
    let (direct_tps, gateway_tps) = (
        direct.0 as f64 / direct.1.max(1e-9),
        gateway.0 as f64 / gateway.1.max(1e-9),
    );
    results.insert(key("tokens_per_s_direct"), json!(round(direct_tps)));
    results.insert(key("tokens_per_s_gateway"), json!(round(gateway_tps)));
    results.insert(
        key("tokens_per_s_ratio"),
        json!(round(gateway_tps / direct_tps)),
    );
    Ok(())
}
