//! `cargo run --example ws_client -- ws://127.0.0.1:8080/v1/orders:track`:
//! a tiny WebSocket client for the gateway's streaming routes.
//!
//! The gateway carries a bidirectional (or any streaming) gRPC call over a
//! WebSocket: one JSON message per text frame each way, and the call's
//! status in the close frame. `websocat` does the same job; this exists so
//! that trying it needs nothing but cargo, and to show how little a client
//! has to do:
//!
//! - each line typed on stdin goes out as one text frame (blank lines are
//!   skipped), while every text frame that comes back is printed on stdout
//!   as soon as it arrives, so answers interleave with what you type;
//! - end of input (Ctrl-D, or the end of a piped file) sends a normal close,
//!   which half-closes the upstream call: the backend sees the end of its
//!   request stream and can still answer before the gateway closes in turn;
//! - the close frame the gateway ends with is printed on stderr as
//!   `close: CODE REASON` (1000 for OK; 1011 with the `google.rpc.Status`
//!   JSON otherwise), and the exit status says whether it was 1000.

use std::error::Error;
use std::process::ExitCode;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: ws_client ws://HOST:PORT/PATH   (one JSON message per stdin line)");
        return ExitCode::from(2);
    };
    match run(&url).await {
        Ok(Some(CloseCode::Normal)) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ws_client: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Talks to `url` until the server's close; returns its close code (`None`
/// when the connection ended without one).
async fn run(url: &str) -> Result<Option<CloseCode>, BoxError> {
    let (mut socket, _response) = tokio_tungstenite::connect_async(url).await?;
    let mut lines = stdin_lines();
    let mut input_open = true;
    let mut close_code = None;
    loop {
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => socket.send(Message::text(line)).await?,
                None => {
                    input_open = false;
                    // Half-close: the server may still send, then closes.
                    socket.close(None).await?;
                }
            },
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => println!("{text}"),
                Some(Ok(Message::Binary(bytes))) => eprintln!("(binary frame, {} bytes)", bytes.len()),
                Some(Ok(Message::Close(frame))) => {
                    match &frame {
                        Some(frame) if frame.reason.is_empty() => eprintln!("close: {}", u16::from(frame.code)),
                        Some(frame) => eprintln!("close: {} {}", u16::from(frame.code), frame.reason),
                        None => eprintln!("close: (no status)"),
                    }
                    close_code = frame.map(|frame| frame.code);
                    // Nothing more can be sent once the server has closed.
                    input_open = false;
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(close_code),
            },
        }
    }
}

/// The lines of stdin, read on a thread of their own: a blocking read
/// there keeps the socket served meanwhile.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}
