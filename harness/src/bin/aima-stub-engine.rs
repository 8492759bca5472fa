//! `aima-stub-engine`: a tiny OpenAI-compatible server that stands in for vLLM in tests.
//!
//! It takes vLLM's arguments (`--model`, `--port`, `--host`, `--gpu-memory-utilization`,
//! `--served-model-name`, and the access-log switches `--disable-access-log-for-endpoints`,
//! `--disable-uvicorn-access-log` and SGLang's `--log-level-http`; anything else is
//! ignored), prints vLLM-like logs, an access line per request as uvicorn does, and is steered
//! through env: `STUB_START_DELAY_MS` / `STUB_START_DELAY_SECS` (a slow model load),
//! `STUB_FAIL=oom|shm|<message>` (fail at start, exit 1; `shm` as vLLM does without enough
//! `/dev/shm`), `STUB_CRASH_AFTER_SECS` (die
//! later, exit 3), `STUB_HANG_AFTER_SECS` (stop answering but keep running) and
//! `STUB_STOP_DELAY_MS` (take that long to exit on SIGTERM), `STUB_TOKEN_DELAY_MS` (pause
//! between streamed tokens, as a real engine decodes). Completions report `usage`
//! (and a usage chunk with `stream_options.include_usage`); `ignore_eos` with `max_tokens`
//! makes a reply exactly that long, as vLLM does; `/v1/embeddings` answers with small
//! deterministic vectors. SIGTERM and SIGINT exit 0. HTTP/1.1 on std threads with
//! keep-alive (a thread per connection, idle ones closed after 5 s as uvicorn does), so
//! it compiles fast and runs `FROM scratch`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigSet, Signal};
use serde_json::{Value, json};

const VLLM_VERSION: &str = "0.6.3";
const DEFAULT_MODEL: &str = "facebook/opt-125m";
const MAX_MODEL_LEN: u64 = 4096;
/// Longest reply `ignore_eos` may ask for.
const MAX_REPLY_TOKENS: usize = 100_000;
/// Dimensions of the stub's embeddings.
const EMBEDDING_DIMS: usize = 8;
/// Bounds one request, so a stuck or oversized client cannot pin a thread or memory.
const MAX_HEAD_BYTES: u64 = 64 * 1024;
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A kept-alive connection with no next request is closed after this, as uvicorn's
/// `--timeout-keep-alive` does by default.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Args {
    model: String,
    served_model_name: Option<String>,
    host: String,
    port: u16,
    gpu_memory_utilization: f64,
    /// vLLM's `--max-model-len` (llama.cpp's `--ctx-size` alike): echoed in the args line.
    max_model_len: Option<u32>,
    access_log: AccessLog,
}

/// Which requests get a uvicorn-style access line.
#[derive(Debug, Clone, Default)]
struct AccessLog {
    /// `--disable-uvicorn-access-log`, or `--log-level-http` above info (SGLang's).
    off: bool,
    /// `--disable-access-log-for-endpoints /health,/metrics` (vLLM's).
    skipped_paths: Vec<String>,
}

impl AccessLog {
    fn logs(&self, path: &str) -> bool {
        !self.off && !self.skipped_paths.iter().any(|p| p == path)
    }
}

impl Args {
    /// The name clients address, as vLLM reports it in `/v1/models`.
    fn served(&self) -> &str {
        self.served_model_name.as_deref().unwrap_or(&self.model)
    }
}

/// vLLM's flags in `--flag value` and `--flag=value` forms (underscores allowed, as
/// vLLM's parser accepts them). Unknown flags, and the value after one, are skipped so
/// that any vLLM command line works; only a bad value for a known flag is an error.
fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut args = Args {
        model: DEFAULT_MODEL.to_owned(),
        served_model_name: None,
        host: "0.0.0.0".to_owned(),
        port: 8000,
        gpu_memory_utilization: 0.9,
        max_model_len: None,
        access_log: AccessLog::default(),
    };
    let mut i = 0;
    while i < argv.len() {
        let token = &argv[i];
        i += 1;
        let Some(flag) = token.strip_prefix("--") else {
            continue; // positionals (e.g. `serve`) mean nothing to the stub
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name.replace('_', "-"), Some(value.to_owned())),
            None => (flag.replace('_', "-"), None),
        };
        let value = match inline {
            Some(value) => Some(value),
            None if argv.get(i).is_some_and(|next| !next.starts_with("--")) => {
                i += 1;
                Some(argv[i - 1].clone())
            }
            None => None,
        };
        let required = || {
            value
                .clone()
                .ok_or_else(|| format!("argument --{name}: expected one argument"))
        };
        match name.as_str() {
            "model" => args.model = required()?,
            // vLLM's flag, and llama-server's for the same thing.
            "served-model-name" | "alias" => args.served_model_name = Some(required()?),
            "host" => args.host = required()?,
            "port" => {
                let value = required()?;
                args.port = value
                    .parse()
                    .map_err(|_| format!("argument --port: invalid int value: '{value}'"))?;
            }
            "gpu-memory-utilization" => {
                let value = required()?;
                args.gpu_memory_utilization = value.parse().map_err(|_| {
                    format!("argument --gpu-memory-utilization: invalid float value: '{value}'")
                })?;
            }
            "max-model-len" | "ctx-size" => {
                let value = required()?;
                args.max_model_len = Some(
                    value
                        .parse()
                        .map_err(|_| format!("argument --{name}: invalid int value: '{value}'"))?,
                );
            }
            "disable-access-log-for-endpoints" => {
                args.access_log.skipped_paths = required()?
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect();
            }
            "disable-uvicorn-access-log" => args.access_log.off = true,
            "log-level-http" => {
                args.access_log.off = !matches!(required()?.as_str(), "debug" | "info" | "trace")
            }
            _ => {} // any other vLLM flag, with its value, means nothing to the stub
        }
    }
    Ok(args)
}

/// The env knobs, read once at start.
#[derive(Debug)]
struct Knobs {
    start_delay: Duration,
    fail: Option<String>,
    crash_after: Option<(Duration, String)>,
}

fn env_secs(name: &str) -> Result<Option<(Duration, String)>, String> {
    let Ok(raw) = std::env::var(name) else {
        return Ok(None);
    };
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{name}={raw} is not a number of seconds; use e.g. {name}=1.5"))?;
    let duration = Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{name}={raw} must be a finite number of seconds >= 0"))?;
    Ok(Some((duration, raw)))
}

fn read_knobs() -> Result<Knobs, String> {
    let start_delay = match std::env::var("STUB_START_DELAY_MS") {
        Ok(raw) => Duration::from_millis(raw.trim().parse().map_err(|_| {
            format!("STUB_START_DELAY_MS={raw} is not whole milliseconds; use e.g. STUB_START_DELAY_MS=1500")
        })?),
        Err(_) => env_secs("STUB_START_DELAY_SECS")?.map_or(Duration::ZERO, |(d, _)| d),
    };
    Ok(Knobs {
        start_delay,
        fail: std::env::var("STUB_FAIL").ok().filter(|v| !v.is_empty()),
        crash_after: env_secs("STUB_CRASH_AFTER_SECS")?,
    })
}

/// `MM-DD HH:MM:SS` in UTC, the stamp vLLM's logger prints (no date crate for this).
fn stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant), shifted so the year starts in March.
    let doe = (days + 719_468) % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn info(source: &str, message: &str) {
    println!("INFO {} {source}] {message}", stamp());
}

/// What `torch` prints when the weights do not fit; AIMA's error reporting is tested
/// against this, so the last line is the one an operator must see.
fn print_oom_traceback() {
    let site = "/usr/local/lib/python3.12/dist-packages";
    eprintln!(
        "ERROR {stamp} engine.py:366] CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.05 GiB is free.
Process SpawnProcess-1:
Traceback (most recent call last):
  File \"/usr/lib/python3.12/multiprocessing/process.py\", line 314, in _bootstrap
    self.run()
  File \"/usr/lib/python3.12/multiprocessing/process.py\", line 108, in run
    self._target(*self._args, **self._kwargs)
  File \"{site}/vllm/engine/multiprocessing/engine.py\", line 368, in run_mp_engine
    raise e
  File \"{site}/vllm/engine/multiprocessing/engine.py\", line 357, in run_mp_engine
    engine = MQLLMEngine.from_engine_args(engine_args=engine_args,
  File \"{site}/vllm/engine/llm_engine.py\", line 335, in __init__
    self.model_executor = executor_class(
  File \"{site}/vllm/executor/gpu_executor.py\", line 40, in _init_executor
    self.driver_worker.load_model()
  File \"{site}/vllm/worker/worker.py\", line 183, in load_model
    self.model_runner.load_model()
  File \"{site}/vllm/worker/model_runner.py\", line 1058, in load_model
    self.model = get_model(model_config=self.model_config,
  File \"{site}/vllm/model_executor/model_loader/loader.py\", line 398, in load_model
    model = _initialize_model(model_config, self.load_config,
  File \"{site}/torch/nn/modules/module.py\", line 1340, in convert
    return t.to(
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.05 GiB is free.",
        stamp = stamp()
    );
}

fn main() -> ExitCode {
    // As PID 1 in a container the kernel applies no default action for SIGTERM/SIGINT,
    // so `docker stop` would wait its full timeout. Block both in this thread before any
    // other exists (threads inherit the mask) and take them synchronously on one thread.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(err) = signals.thread_block() {
        eprintln!("ERROR: cannot block SIGTERM/SIGINT: {err}");
        return ExitCode::from(1);
    }
    // STUB_STOP_DELAY_MS: a slow shutdown (an engine freeing GPU memory), so tests can
    // catch a stop in the middle.
    let stop_delay = std::env::var("STUB_STOP_DELAY_MS")
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    std::thread::spawn(move || {
        loop {
            if signals.wait().is_ok() {
                println!("INFO:     Shutting down");
                std::thread::sleep(stop_delay);
                println!("INFO:     Finished server process [{}]", std::process::id());
                std::process::exit(0);
            }
        }
    });

    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("usage: api_server.py [-h] [--host HOST] [--port PORT] [--model MODEL] ...");
            eprintln!("api_server.py: error: {message}");
            return ExitCode::from(2);
        }
    };
    let knobs = match read_knobs() {
        Ok(knobs) => knobs,
        Err(message) => {
            eprintln!("ERROR: aima-stub-engine: {message}");
            return ExitCode::from(2);
        }
    };

    info(
        "api_server.py:528",
        &format!("vLLM API server version {VLLM_VERSION} (aima stub engine)"),
    );
    info(
        "api_server.py:529",
        &format!(
            "args: model='{}', served_model_name={}, host='{}', port={}, gpu_memory_utilization={:?}, max_model_len={}",
            args.model,
            args.served_model_name
                .as_deref()
                .map_or_else(|| "None".to_owned(), |n| format!("['{n}']")),
            args.host,
            args.port,
            args.gpu_memory_utilization,
            args.max_model_len
                .map_or_else(|| "None".to_owned(), |n| n.to_string()),
        ),
    );
    info(
        "model_runner.py:1056",
        &format!("Starting to load model {}...", args.model),
    );
    std::thread::sleep(knobs.start_delay);
    match knobs.fail.as_deref() {
        Some("oom") => {
            print_oom_traceback();
            return ExitCode::from(1);
        }
        // What a real vLLM 0.32 printed in a container with Docker's 64 MiB /dev/shm:
        // the cause in the middle, a line pointing back at it, then the shutdown.
        Some("shm") => {
            eprintln!(
                "(EngineCore pid=211) ERROR {} core.py:708] EngineCore failed to start.",
                stamp()
            );
            eprintln!("Traceback (most recent call last):");
            eprintln!(
                "  File \"/opt/venv/lib/python3.11/site-packages/vllm/v1/engine/core.py\", line 699, in run_engine_core"
            );
            eprintln!(
                "RuntimeError: Insufficient space in /dev/shm to create a shared memory buffer: 160 MiB required, 64 MiB free"
            );
            eprintln!();
            eprintln!("The above exception was the direct cause of the following exception:");
            eprintln!(
                "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {{}}"
            );
            eprintln!(
                "(APIServer pid=1) INFO {} launcher.py:80] Shutting down FastAPI HTTP server.",
                stamp()
            );
            return ExitCode::from(1);
        }
        Some(other) => {
            eprintln!("ERROR {} engine.py:366] {other}", stamp());
            eprintln!("RuntimeError: {other}");
            return ExitCode::from(1);
        }
        None => {}
    }
    info("model_runner.py:1067", "Loading model weights took 0.00 GB");
    info(
        "api_server.py:578",
        &format!(
            "Starting vLLM API server on http://{}:{}",
            args.host, args.port
        ),
    );
    println!("INFO:     Started server process [{}]", std::process::id());
    println!("INFO:     Waiting for application startup.");
    println!("INFO:     Application startup complete.");
    let listener = match TcpListener::bind((args.host.as_str(), args.port)) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "ERROR:    [Errno {}] error while attempting to bind on address ('{}', {}): {}",
                err.raw_os_error().unwrap_or(0),
                args.host,
                args.port,
                // uvicorn shows the OS message without Rust's "(os error N)".
                err.to_string()
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
                    .to_lowercase()
            );
            return ExitCode::from(1);
        }
    };
    println!(
        "INFO:     Uvicorn running on http://{}:{} (Press CTRL+C to quit)",
        args.host, args.port
    );

    if let Some((after, raw)) = knobs.crash_after {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            eprintln!(
                "ERROR {} client.py:250] Engine core died unexpectedly (aima stub: STUB_CRASH_AFTER_SECS={raw})",
                stamp()
            );
            std::process::exit(3);
        });
    }

    // STUB_HANG_AFTER_SECS: the engine deadlocks (connections are accepted, never
    // answered) while the process keeps running, as a hung CUDA kernel would.
    let hang_at = env_secs("STUB_HANG_AFTER_SECS")
        .ok()
        .flatten()
        .map(|(after, _)| std::time::Instant::now() + after);
    let serving = Arc::new(Serving {
        served: args.served().to_owned(),
        strict: args.served_model_name.is_some(),
        access_log: args.access_log.clone(),
    });
    let mut hung = Vec::new();
    for conn in listener.incoming() {
        match conn {
            Ok(stream) if hang_at.is_some_and(|at| std::time::Instant::now() >= at) => {
                hung.push(stream)
            }
            Ok(stream) => {
                let serving = Arc::clone(&serving);
                std::thread::spawn(move || handle(stream, &serving, hang_at));
            }
            // Out of descriptors and the like: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    ExitCode::SUCCESS
}

#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    /// HTTP/1.1 without `Connection: close`: the client may send another request.
    keep_alive: bool,
}

/// Why no request was read.
enum NoRequest {
    /// The client closed an idle kept-alive connection: nothing to answer.
    Closed,
    /// A malformed or oversized request: answer with this status.
    Bad(u16, &'static str),
}

/// Reads one request.
fn read_request(stream: &TcpStream) -> Result<Request, NoRequest> {
    let mut reader = BufReader::new(stream.take(MAX_HEAD_BYTES));
    let mut line = String::new();
    let bad = NoRequest::Bad(400, "malformed request");
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => return Err(NoRequest::Closed),
        Ok(_) => {}
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad);
    };
    let mut keep_alive = parts.next() == Some("HTTP/1.1");
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let method = method.to_owned();
    let mut content_length = 0usize;
    let mut expect_continue = false;
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .map_err(|_| NoRequest::Bad(400, "malformed request"))?
            == 0
        {
            return Err(NoRequest::Bad(400, "malformed request"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(NoRequest::Bad(400, "malformed request"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .parse()
                .map_err(|_| NoRequest::Bad(400, "malformed request"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive &= !value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    if content_length > MAX_BODY_BYTES {
        return Err(NoRequest::Bad(413, "request body too large"));
    }
    // Bytes the reader already buffered belong to the body.
    let mut body = reader.buffer().to_vec();
    let mut stream = reader.into_inner().into_inner();
    if expect_continue && body.len() < content_length {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| NoRequest::Bad(400, "malformed request"))?;
    }
    if body.len() < content_length {
        let start = body.len();
        body.resize(content_length, 0);
        stream
            .read_exact(&mut body[start..])
            .map_err(|_| NoRequest::Bad(400, "malformed request"))?;
    }
    body.truncate(content_length);
    Ok(Request {
        method,
        path,
        body,
        keep_alive,
    })
}

#[derive(Debug)]
enum Body {
    Json(Value),
    Empty,
    /// Server-sent events, each already rendered as `data: ...`.
    Events(Vec<String>),
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        _ => "Internal Server Error",
    }
}

/// What every connection serves, and how it logs.
#[derive(Debug)]
struct Serving {
    served: String,
    /// Given `--served-model-name` (or `--alias`): requests for another model are a 404,
    /// as vLLM answers them.
    strict: bool,
    access_log: AccessLog,
}

fn handle(mut stream: TcpStream, serving: &Serving, hang_at: Option<std::time::Instant>) {
    // Best effort: a client that hangs up early only loses its own answer.
    let _ = stream.set_read_timeout(Some(KEEP_ALIVE));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "-".to_owned(), |a| a.to_string());
    // Kept alive as uvicorn does, so a proxy's connection pool can reuse connections.
    loop {
        let request = read_request(&stream);
        // A hung engine answers nothing more, on kept-alive connections too.
        if hang_at.is_some_and(|at| std::time::Instant::now() >= at) {
            loop {
                std::thread::park();
            }
        }
        let (status, body, line, keep_alive) = match request {
            Ok(request) => {
                let (status, body) = unknown_model(&request, serving)
                    .unwrap_or_else(|| route(&request, &serving.served));
                let line = serving
                    .access_log
                    .logs(&request.path)
                    .then(|| format!("{} {} HTTP/1.1", request.method, request.path));
                (status, body, line, request.keep_alive)
            }
            Err(NoRequest::Closed) => return,
            Err(NoRequest::Bad(status, message)) => (
                status,
                Body::Json(vllm_error(status, message)),
                (!serving.access_log.off).then(|| "-".to_owned()),
                false,
            ),
        };
        if let Some(line) = line {
            println!("INFO:     {peer} - \"{line}\" {status} {}", reason(status));
        }
        if write_response(&mut stream, status, body, keep_alive).is_err() || !keep_alive {
            linger(&mut stream);
            return;
        }
    }
}

/// Closes as uvicorn and nginx do: stop writing, then read and throw away what the
/// client still sends (a body refused unread) for a moment, since closing a socket
/// with unread data resets the connection and the client never reads the answer.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 64 * 1024];
    let mut drained = 0usize;
    while drained < 64 * 1024 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn write_response(
    stream: &mut TcpStream,
    status: u16,
    body: Body,
    keep_alive: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nConnection: {}\r\n",
        reason(status),
        if keep_alive { "keep-alive" } else { "close" }
    );
    match body {
        Body::Empty => stream.write_all(format!("{head}Content-Length: 0\r\n\r\n").as_bytes()),
        Body::Json(value) => {
            let text = value.to_string();
            stream.write_all(
                format!(
                    "{head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )
                .as_bytes(),
            )
        }
        Body::Events(events) => {
            // Chunked, as uvicorn sends it: an engine that dies mid-stream leaves the body
            // visibly incomplete instead of looking like a clean end.
            stream.write_all(
                format!("{head}Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .as_bytes(),
            )?;
            let delay = token_delay();
            let total = events.len();
            for (sent, event) in events.into_iter().enumerate() {
                if sent > 0 && !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                let data = format!("data: {event}\n\n");
                let written = stream
                    .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
                    .and_then(|()| stream.flush());
                if let Err(e) = written {
                    // Tests read this line to see that a client's hang-up reached the engine.
                    println!("INFO:     client disconnected after {sent} of {total} events: {e}");
                    return Err(e);
                }
            }
            stream.write_all(b"0\r\n\r\n")
        }
    }
}

/// `STUB_TOKEN_DELAY_MS`: the pause between streamed events.
fn token_delay() -> Duration {
    std::env::var("STUB_TOKEN_DELAY_MS")
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}

fn vllm_error(code: u16, message: &str) -> Value {
    let kind = match code {
        400 => "BadRequestError",
        404 => "NotFoundError",
        413 => "RequestEntityTooLarge",
        _ => "InternalServerError",
    };
    json!({"object": "error", "message": message, "type": kind, "param": null, "code": code})
}

/// vLLM's answer to a request naming a model it does not serve.
fn unknown_model(request: &Request, serving: &Serving) -> Option<(u16, Body)> {
    if !serving.strict || request.method != "POST" {
        return None;
    }
    let named = serde_json::from_slice::<Value>(&request.body)
        .ok()?
        .get("model")?
        .as_str()?
        .to_owned();
    (named != serving.served).then(|| {
        (
            404,
            Body::Json(vllm_error(
                404,
                &format!("The model `{named}` does not exist."),
            )),
        )
    })
}

fn route(request: &Request, served: &str) -> (u16, Body) {
    let method = request.method.as_str();
    match (method, request.path.as_str()) {
        ("GET", "/health") => (200, Body::Empty),
        ("GET", "/version") => (200, Body::Json(json!({"version": VLLM_VERSION}))),
        ("GET", "/v1/models") => (
            200,
            Body::Json(json!({
                "object": "list",
                "data": [{
                    "id": served,
                    "object": "model",
                    "created": unix_now(),
                    "owned_by": "aima-stub",
                    "max_model_len": MAX_MODEL_LEN,
                }],
            })),
        ),
        ("POST", "/v1/completions") => completion(&request.body, served, false),
        ("POST", "/v1/chat/completions") => completion(&request.body, served, true),
        ("POST", "/v1/embeddings") => embeddings(&request.body, served),
        (
            _,
            "/health"
            | "/version"
            | "/v1/models"
            | "/v1/completions"
            | "/v1/chat/completions"
            | "/v1/embeddings",
        ) => (405, Body::Json(json!({"detail": "Method Not Allowed"}))),
        _ => (404, Body::Json(json!({"detail": "Not Found"}))),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn next_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:04x}", unix_now())
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Answers `/v1/completions` (`chat == false`) and `/v1/chat/completions` with a fixed
/// reply cut to `max_tokens` words; token counts are whitespace words.
fn completion(body: &[u8], served: &str, chat: bool) -> (u16, Body) {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) | Err(_) => {
            return (
                400,
                Body::Json(vllm_error(400, "request body must be a JSON object")),
            );
        }
    };
    let prompt_tokens = if chat {
        let Some(messages) = request.get("messages").and_then(Value::as_array) else {
            return (
                400,
                Body::Json(vllm_error(400, "field 'messages' is required")),
            );
        };
        messages
            .iter()
            .filter_map(|m| m.get("content").and_then(Value::as_str))
            .map(words)
            .sum()
    } else {
        match request.get("prompt") {
            Some(Value::String(prompt)) => words(prompt),
            Some(Value::Array(prompts)) => {
                prompts.iter().filter_map(Value::as_str).map(words).sum()
            }
            _ => {
                return (
                    400,
                    Body::Json(vllm_error(400, "field 'prompt' is required")),
                );
            }
        }
    };
    let reply = format!("Hello from the aima stub engine serving {served}.");
    let sentence: Vec<&str> = reply.split_whitespace().collect();
    let mut pieces = sentence.clone();
    let mut finish_reason = "stop";
    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .map(|max| usize::try_from(max).unwrap_or(usize::MAX));
    if let Some(max) = max_tokens {
        if request.get("ignore_eos").and_then(Value::as_bool) == Some(true) {
            // vLLM's extension: no end of sequence, exactly max_tokens (bounded here).
            pieces = sentence
                .iter()
                .copied()
                .cycle()
                .take(max.min(MAX_REPLY_TOKENS))
                .collect();
            finish_reason = "length";
        } else if max < pieces.len() {
            pieces.truncate(max);
            finish_reason = "length";
        }
    }
    let text = pieces.join(" ");
    let completion_tokens = pieces.len() as u64;
    let id = next_id(if chat { "chatcmpl" } else { "cmpl" });
    let created = unix_now();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });

    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let chunk = |choice: Value| {
            json!({"id": id, "object": object, "created": created, "model": served, "choices": [choice]})
                .to_string()
        };
        let mut events = Vec::new();
        if chat {
            events.push(chunk(json!({
                "index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null,
            })));
        }
        for (n, piece) in pieces.iter().enumerate() {
            let piece = if n == 0 {
                (*piece).to_owned()
            } else {
                format!(" {piece}")
            };
            events.push(chunk(if chat {
                json!({"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null})
            } else {
                json!({"index": 0, "text": piece, "logprobs": null, "finish_reason": null})
            }));
        }
        events.push(chunk(if chat {
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason})
        } else {
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason})
        }));
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        if include_usage {
            events.push(
                json!({"id": id, "object": object, "created": created, "model": served, "choices": [], "usage": usage})
                    .to_string(),
            );
        }
        events.push("[DONE]".to_owned());
        return (200, Body::Events(events));
    }

    let choice = if chat {
        json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason,
        })
    } else {
        json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason})
    };
    (
        200,
        Body::Json(json!({
            "id": id,
            "object": if chat { "chat.completion" } else { "text_completion" },
            "created": created,
            "model": served,
            "choices": [choice],
            "usage": usage,
        })),
    )
}

/// Answers `/v1/embeddings`: one small unit vector per input, derived from its text, so
/// equal inputs embed equally; tokens are whitespace words.
fn embeddings(body: &[u8], served: &str) -> (u16, Body) {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) | Err(_) => {
            return (
                400,
                Body::Json(vllm_error(400, "request body must be a JSON object")),
            );
        }
    };
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => {
            return (
                400,
                Body::Json(vllm_error(
                    400,
                    "field 'input' must be a string or an array of strings",
                )),
            );
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": embed(text)})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| words(t)).sum();
    (
        200,
        Body::Json(json!({
            "object": "list",
            "data": data,
            "model": served,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })),
    )
}

fn embed(text: &str) -> Vec<f64> {
    // FNV-1a per dimension: cheap, stable across runs, no dependency.
    let raw: Vec<f64> = (0..EMBEDDING_DIMS)
        .map(|dim| {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ dim as u64;
            for byte in text.bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            (hash % 2001) as f64 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::EPSILON);
    raw.iter().map(|x| x / norm).collect()
}
