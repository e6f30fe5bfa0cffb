//! Step 1, prepare: the piece list of a file or the manifest of a directory, from this node's
//! own index if it shares the id, else from a holder; checked against the id; with the
//! attributes of its files (`transfer::attrs`) when a holder tells them; persisted.

use std::collections::HashSet;

use iwant_behaviours::{content, id::Id};
use libp2p::PeerId;

use super::{blocking, fetch::REFRESH_NO_HOLDERS, Context, Stop, Target};
use crate::{
    share::Kind,
    store::DownloadRow,
    transfer::{
        names,
        units::{self, Plan},
        DownloadState,
    },
};

/// The piece list or manifest of `target`, checked, and the download's row, persisted.
pub(super) async fn run(ctx: &Context, target: Target) -> Result<DownloadRow, Stop> {
    // Persisted at once, with no piece list yet, so a download the node accepted survives a
    // stop or a crash while it still looks for a holder.
    let part = names::part_path(&target.dest, &target.name, &target.id);
    let mut row = DownloadRow {
        id: target.id,
        kind: target.kind,
        name: target.name.clone(),
        size: target.size,
        dest: target.dest.to_string_lossy().into_owned(),
        part: part.to_string_lossy().into_owned(),
        meta: Vec::new(),
        done: Vec::new(),
        placed: None,
        attrs: None,
        started_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    };
    let pending = row.clone();
    ctx.store(move |s| s.put_download(&pending)).await?;
    let mut asked: HashSet<PeerId> = HashSet::new();
    // The size goes with the piece list that proved itself (the leader's may be a liar's).
    // `from`: the holders to ask for attributes, the one that gave the piece list first
    // (none: this node offers the id itself).
    let (size, meta, from) = loop {
        if let Some((size, meta)) = local_meta(ctx, &target).await {
            break (size, meta, Vec::new());
        }
        let mut last = String::from("no node holding it is reachable");
        match ctx.holders.find(target.id).await {
            Ok(holders) if holders.is_empty() => {}
            Ok(holders) => {
                let mut found = None;
                for (n, &peer) in holders.iter().enumerate() {
                    match fetch_meta(ctx, peer, &target).await {
                        Ok((size, meta)) => {
                            let mut from = vec![peer];
                            from.extend(holders[n + 1..].iter().take(ATTRS_ASKED - 1));
                            found = Some((size, meta, from));
                            break;
                        }
                        Err(MetaError::Unusable(e)) => {
                            // Content-addressed: every holder serves these same bytes.
                            let key = row.id;
                            let _ = ctx.store(move |s| s.delete_download(&key)).await;
                            return Err(Stop::Failed(format!("its manifest is unusable: {e}")));
                        }
                        Err(MetaError::Peer(e)) => {
                            if asked.insert(peer) {
                                tracing::debug!(%peer, error = %e, "holder cannot give the piece list or manifest");
                            }
                            last = format!("{peer}: {e}");
                        }
                    }
                }
                if let Some(meta) = found {
                    break meta;
                }
            }
            Err(e) => last = e,
        }
        ctx.set_state(
            DownloadState::Waiting,
            Some(format!("waiting for a holder to come back ({last})")),
        );
        ctx.pause(REFRESH_NO_HOLDERS * 2).await?;
    };
    row.size = size;
    row.meta = meta;
    row.attrs = attrs(ctx, &row, &from).await;
    let saved = row.clone();
    ctx.store(move |s| s.put_download(&saved)).await?;
    Ok(row)
}

/// The size and the piece list or manifest from this node's own indexes, if it offers the id.
async fn local_meta(ctx: &Context, target: &Target) -> Option<(u64, Vec<u8>)> {
    let (db, id, kind) = (ctx.index.db().clone(), target.id, target.kind);
    let roots: Vec<String> = ctx.index.indexes().map(|(_, i)| i.root_key()).collect();
    blocking(move || -> Option<(u64, Vec<u8>)> {
        let store = db.get().ok()?;
        roots.iter().find_map(|root| match kind {
            Kind::File => {
                let row = store.shared_file(root, &id).ok()??;
                Plan::file(id, row.stamp.size, &row.pieces).ok()?;
                Some((row.stamp.size, row.pieces))
            }
            Kind::Dir => {
                let dir = crate::transfer::serve::shared_dir(&store, root, &id)?;
                Plan::dir(id, &dir.manifest).ok()?;
                Some((dir.size, dir.manifest))
            }
        })
    })
    .await
}

/// How many holders a download asks for its files' attributes before going on without.
const ATTRS_ASKED: usize = 3;

/// The attribute records of download `row` (whose piece list or manifest is known): from this
/// node's own index when `from` is empty, else from the first of `from` that tells all of
/// them. `None` when nobody does: attributes are hints, a download goes on without.
async fn attrs(ctx: &Context, row: &DownloadRow, from: &[PeerId]) -> Option<Vec<u8>> {
    let plan = match row.kind {
        Kind::File => Plan::file(row.id, row.size, &row.meta),
        Kind::Dir => Plan::dir(row.id, &row.meta),
    }
    .ok()?;
    let expected = crate::transfer::attrs::expected(&plan);
    if from.is_empty() {
        let (index, id) = (ctx.index.clone(), row.id);
        return blocking(move || {
            let store = index.db().get().ok()?;
            crate::transfer::attrs::offered(&index, &store, &id)
        })
        .await
        .filter(|r| r.len() as u64 == expected * content::ATTRS_LEN as u64);
    }
    for &peer in from {
        match attrs_from(ctx, peer, row.id, expected).await {
            Ok(records) => return Some(records),
            Err(e) => tracing::debug!(%peer, error = %e, "holder cannot tell the attributes"),
        }
    }
    None
}

/// All `expected` attribute records of `id` from `peer`, page by page.
async fn attrs_from(ctx: &Context, peer: PeerId, id: Id, expected: u64) -> Result<Vec<u8>, String> {
    let mut records = Vec::new();
    loop {
        let first = (records.len() / content::ATTRS_LEN) as u64;
        if first == expected {
            return Ok(records);
        }
        let response = ctx
            .net
            .content(peer, content::Request::Attrs { id, first })
            .await
            .map_err(|e| e.to_string())?;
        response.check()?;
        match response {
            content::Response::Attrs {
                total,
                first: at,
                attrs,
            } if at == first && total == expected && !attrs.is_empty() => {
                records.extend_from_slice(&attrs)
            }
            content::Response::Attrs { total, .. } => {
                return Err(format!("{total} records where the manifest has {expected}"))
            }
            other => return Err(describe(&other)),
        }
    }
}

/// Why a holder's piece list or manifest cannot be used.
enum MetaError {
    /// This peer failed or sent something else: another holder may do better.
    Peer(String),
    /// The manifest hashes to the id but cannot become a plan: no holder can do better.
    Unusable(String),
}

impl From<String> for MetaError {
    fn from(e: String) -> Self {
        Self::Peer(e)
    }
}

/// A file's size and piece list, or a directory's size and whole manifest, from `peer`,
/// checked against the id.
async fn fetch_meta(
    ctx: &Context,
    peer: PeerId,
    target: &Target,
) -> Result<(u64, Vec<u8>), MetaError> {
    match target.kind {
        Kind::File => {
            let (size, pieces) = piece_list(ctx, peer, target.id).await?;
            Plan::file(target.id, size, &pieces).map_err(|e| e.to_string())?;
            Ok((size, pieces))
        }
        Kind::Dir => {
            let mut manifest = Vec::new();
            loop {
                let request = content::Request::Manifest {
                    id: target.id,
                    offset: manifest.len() as u64,
                };
                let response = ctx
                    .net
                    .content(peer, request)
                    .await
                    .map_err(|e| e.to_string())?;
                response.check()?;
                match response {
                    content::Response::Manifest {
                        total,
                        offset,
                        bytes,
                    } if offset == manifest.len() as u64 => {
                        manifest.extend_from_slice(&bytes);
                        if manifest.len() as u64 >= total {
                            break;
                        }
                        if bytes.is_empty() {
                            return Err(MetaError::Peer("an empty manifest page".into()));
                        }
                    }
                    other => return Err(describe(&other).into()),
                }
            }
            let plan = match Plan::dir(target.id, &manifest) {
                Ok(plan) => plan,
                Err(e @ units::PlanError::BadManifest(_)) => {
                    return Err(MetaError::Unusable(e.to_string()))
                }
                Err(e) => return Err(MetaError::Peer(e.to_string())),
            };
            Ok((plan.total_bytes(), manifest))
        }
    }
}

/// A file's size and piece list from `peer` (not yet checked against the id).
pub(super) async fn piece_list(
    ctx: &Context,
    peer: PeerId,
    id: Id,
) -> Result<(u64, Vec<u8>), String> {
    let response = ctx
        .net
        .content(peer, content::Request::Pieces { id })
        .await
        .map_err(|e| e.to_string())?;
    response.check()?;
    match response {
        content::Response::Pieces { size, pieces, .. } => Ok((size, pieces.0)),
        other => Err(describe(&other)),
    }
}

fn describe(response: &content::Response) -> String {
    match response {
        content::Response::NotFound => "does not share it (any more)".into(),
        content::Response::Busy => "busy".into(),
        content::Response::Refused { reason } => format!("refused: {reason}"),
        _ => "an unexpected answer".into(),
    }
}
