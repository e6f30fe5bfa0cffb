//! `/iwant/chunk/1` over real libp2p streams (`libp2p-stream` on libp2p-swarm-test's in-memory
//! transport): pipelined requests come back in order, a peer that does not accept the protocol
//! refuses the stream, and `NodeBehaviour` carries both `/iwant/content/1.0.0` and chunk streams.

use std::{io, time::Duration};

use futures::{AsyncWriteExt, StreamExt};
use iwant_behaviours::{
    chunk::{self, Header, Request, Status},
    content,
    libp2p_stream::{self, Control, OpenStreamError},
    wire::{Bytes, Id},
    Config, NodeBehaviour, NodeBehaviourEvent,
};
use libp2p::{
    request_response::{self, Message},
    swarm::SwarmEvent,
    PeerId, Stream, Swarm,
};
use libp2p_swarm_test::SwarmExt;

/// How long any wait in these tests may take before the test fails (generous: CI is slow).
const LIMIT: Duration = Duration::from_secs(20);

const PIECE: u64 = 256 * 1024;

/// A file of 700,000 bytes under the piece rule: pieces of 256 KiB, the last one short.
struct File {
    id: Id,
    bytes: Vec<u8>,
}

impl File {
    fn new() -> Self {
        Self {
            id: Id([0x42; 32]),
            bytes: (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        }
    }

    fn piece_count(&self) -> u32 {
        (self.bytes.len() as u64).div_ceil(PIECE).max(1) as u32
    }

    fn piece(&self, index: u32) -> Option<&[u8]> {
        if index >= self.piece_count() {
            return None;
        }
        let start = (u64::from(index) * PIECE) as usize;
        let end = (start + PIECE as usize).min(self.bytes.len());
        Some(&self.bytes[start..end])
    }
}

/// Serves one chunk stream the way the protocol requires: requests strictly in order, the next
/// read only after the previous answer, a flush after each answer.
async fn serve(mut stream: Stream, file: &File) -> io::Result<()> {
    while let Some(request) = chunk::read_request(&mut stream).await? {
        if request.id != file.id {
            chunk::write_error(&mut stream, Status::NotFound, request.first).await?;
        } else {
            for index in request.first..request.first + request.count {
                match file.piece(index) {
                    Some(piece) => chunk::write_piece(&mut stream, index, piece).await?,
                    None => {
                        chunk::write_error(&mut stream, Status::OutOfRange, index).await?;
                        break;
                    }
                }
            }
        }
        stream.flush().await?;
    }
    stream.close().await
}

/// Accepts chunk streams on `control` and serves each in its own task.
fn spawn_server(mut control: Control) {
    let mut incoming = control.accept(chunk::PROTOCOL).unwrap();
    tokio::spawn(async move {
        while let Some((_peer, stream)) = incoming.next().await {
            tokio::spawn(async move {
                let _ = serve(stream, &File::new()).await;
            });
        }
    });
}

/// Pipelines `requests` on one stream, then reads every answer: `(header, data)` per frame.
async fn fetch(
    control: &mut Control,
    peer: PeerId,
    requests: &[Request],
    file: &File,
) -> io::Result<Vec<(Header, Vec<u8>)>> {
    let mut stream = control
        .open_stream(peer, chunk::PROTOCOL)
        .await
        .map_err(io::Error::other)?;
    for request in requests {
        chunk::write_request(&mut stream, request).await?;
    }
    stream.flush().await?;
    let mut frames = Vec::new();
    for request in requests {
        for index in request.first..request.first + request.count {
            let header = chunk::read_header(&mut stream).await?;
            assert_eq!(header.index, index, "frames come in request order");
            if header.status != Status::Ok {
                frames.push((header, Vec::new()));
                break;
            }
            // The length a client expects comes from the piece list, never from the frame.
            let expected = file.piece(index).map_or(0, |p| p.len() as u32);
            let mut data = Vec::new();
            chunk::read_piece(&mut stream, &header, expected, &mut data).await?;
            frames.push((header, data));
        }
    }
    stream.close().await?;
    Ok(frames)
}

fn stream_swarm() -> Swarm<libp2p_stream::Behaviour> {
    Swarm::new_ephemeral_tokio(|_| libp2p_stream::Behaviour::new())
}

#[tokio::test]
async fn pipelined_chunk_requests_come_back_in_order_over_a_libp2p_stream() {
    let mut client = stream_swarm();
    let mut server = stream_swarm();
    server.listen().with_memory_addr_external().await;
    client.connect(&mut server).await;
    let server_peer = *server.local_peer_id();
    spawn_server(server.behaviour().new_control());
    let mut control = client.behaviour().new_control();
    tokio::spawn(client.loop_on_next());
    tokio::spawn(server.loop_on_next());

    let file = File::new();
    let requests = [
        Request {
            id: file.id,
            first: 0,
            count: 2,
        },
        Request {
            id: file.id,
            first: 1,
            count: 5,
        },
        Request {
            id: Id([0; 32]),
            first: 7,
            count: 1,
        },
    ];
    let frames = tokio::time::timeout(LIMIT, fetch(&mut control, server_peer, &requests, &file))
        .await
        .expect("answers within the limit")
        .unwrap();
    let got: Vec<(Status, u32, u32)> = frames
        .iter()
        .map(|(h, _)| (h.status, h.index, h.len))
        .collect();
    let (ok, last) = (Status::Ok, 700_000 - 2 * PIECE as u32);
    let full = PIECE as u32;
    assert_eq!(
        got,
        [
            (ok, 0, full),
            (ok, 1, full),
            (ok, 1, full),
            (ok, 2, last),
            (Status::OutOfRange, 3, 0),
            (Status::NotFound, 7, 0),
        ]
    );
    for (header, data) in &frames {
        if header.status == Status::Ok {
            assert_eq!(&data[..], file.piece(header.index).unwrap());
        }
    }
}

#[tokio::test]
async fn a_peer_that_does_not_accept_chunk_streams_refuses_them() {
    let mut client = stream_swarm();
    let mut server = stream_swarm();
    server.listen().with_memory_addr_external().await;
    client.connect(&mut server).await;
    let server_peer = *server.local_peer_id();
    let mut control = client.behaviour().new_control();
    tokio::spawn(client.loop_on_next());
    tokio::spawn(server.loop_on_next());

    let result = tokio::time::timeout(LIMIT, control.open_stream(server_peer, chunk::PROTOCOL))
        .await
        .expect("an answer within the limit");
    assert!(
        matches!(result, Err(OpenStreamError::UnsupportedProtocol(_))),
        "{:?}",
        result.map(|_| ())
    );
}

fn node() -> Swarm<NodeBehaviour> {
    Swarm::new_ephemeral_tokio(|key| {
        NodeBehaviour::new(&key, Config::default().with_mdns(false)).unwrap()
    })
}

/// Answers `/iwant/content/1.0.0` requests for `File::new()` until the task is dropped.
async fn run_content_server(mut swarm: Swarm<NodeBehaviour>) {
    let file = File::new();
    loop {
        let SwarmEvent::Behaviour(NodeBehaviourEvent::Content(request_response::Event::Message {
            message: Message::Request {
                request, channel, ..
            },
            ..
        })) = swarm.select_next_some().await
        else {
            continue;
        };
        request.check().unwrap();
        let response = match request {
            content::Request::Pieces { id } if id == file.id => content::Response::Pieces {
                size: file.bytes.len() as u64,
                piece_size: PIECE,
                pieces: Bytes(vec![0x11; file.piece_count() as usize * 32]),
            },
            _ => content::Response::NotFound,
        };
        let _ = swarm
            .behaviour_mut()
            .content
            .send_response(channel, response);
    }
}

/// Sends one content request and drives `swarm` until its response arrives.
async fn ask(
    swarm: &mut Swarm<NodeBehaviour>,
    peer: PeerId,
    request: content::Request,
) -> content::Response {
    let id = swarm.behaviour_mut().content.send_request(&peer, request);
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(NodeBehaviourEvent::Content(
                request_response::Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                },
            )) if request_id == id => return response,
            SwarmEvent::Behaviour(NodeBehaviourEvent::Content(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) if request_id == id => panic!("content request failed: {error}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn node_behaviour_carries_content_requests_and_chunk_streams() {
    let mut client = node();
    let mut server = node();
    server.listen().with_memory_addr_external().await;
    client.connect(&mut server).await;
    let server_peer = *server.local_peer_id();
    spawn_server(server.behaviour().chunk.new_control());
    tokio::spawn(run_content_server(server));
    let file = File::new();

    let test = async {
        let response = ask(
            &mut client,
            server_peer,
            content::Request::Pieces { id: file.id },
        )
        .await;
        response.check().unwrap();
        let content::Response::Pieces {
            size, piece_size, ..
        } = response
        else {
            panic!("{response:?}");
        };
        assert_eq!((size, piece_size), (700_000, PIECE));
        let missing = ask(
            &mut client,
            server_peer,
            content::Request::Manifest {
                id: Id([9; 32]),
                offset: 0,
            },
        )
        .await;
        assert_eq!(missing, content::Response::NotFound);

        let mut control = client.behaviour().chunk.new_control();
        tokio::spawn(client.loop_on_next());
        let requests: Vec<Request> = (0..3)
            .map(|i| Request {
                id: file.id,
                first: i,
                count: 1,
            })
            .collect();
        let frames = fetch(&mut control, server_peer, &requests, &file)
            .await
            .unwrap();
        let joined: Vec<u8> = frames.into_iter().flat_map(|(_, data)| data).collect();
        assert_eq!(joined, file.bytes);
    };
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("done within the limit");
}
