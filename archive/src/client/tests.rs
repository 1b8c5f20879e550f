use object_store::memory::InMemory;

use super::*;
use crate::manifest::{sha256_hex, Kind};

fn archive() -> Archive {
    Archive::with_store(
        Arc::new(InMemory::new()),
        Layout::new("prod").unwrap(),
        "memory://",
    )
}

/// A century's window over a day of segments lists what is stored in it, once, in
/// key order, and nothing of the other node or of the hours outside.
#[tokio::test]
async fn a_key_range_lists_only_what_lies_in_it() {
    const HOUR: u64 = 3_600_000_000_000;
    let archive = archive();
    let day = 1_796_000_000_000_000_000 / (24 * HOUR) * (24 * HOUR);
    for node in ["node-1", "node-2"] {
        for hour in 0..24 {
            for seq in 0..3 {
                let key = archive
                    .layout()
                    .segment(node, day + hour * HOUR + seq, hour * 3 + seq)
                    .manifest;
                archive
                    .store
                    .put(&key, Bytes::from_static(b"{}").into())
                    .await
                    .unwrap();
            }
        }
    }
    let layout = archive.layout();
    let range = |from, to| layout.node_range("node-1", from, to);
    let (after, before) = range(day + 5 * HOUR + 1, day + 7 * HOUR);
    let (listed, requests) = archive
        .list_range(&layout.node("node-1"), &after, &before)
        .await
        .unwrap();
    // 04:00 (the hour before), 05:00 and 06:00.
    assert_eq!(listed.len(), 9, "{listed:?}");
    assert_eq!(requests, 1);
    assert!(listed.windows(2).all(|w| w[0].location < w[1].location));
    let (after, before) = range(0, u64::MAX / 2);
    let (listed, _) = archive
        .list_range(&layout.node("node-1"), &after, &before)
        .await
        .unwrap();
    assert_eq!(listed.len(), 72);
    assert!(listed.iter().all(|m| m.location.as_ref().contains("/node-1/")));
}

fn segment(archive: &Archive, data: &[u8]) -> (ObjectKeys, Manifest) {
    let keys = archive.layout().segment("node-1", 1_000, 7);
    let mut manifest = Manifest::new(Kind::Segment, "prod", "node-1", 1_000, 2_000);
    manifest.stored_bytes = data.len() as u64;
    manifest.stored_sha256 = sha256_hex(data);
    manifest.object = Some(keys.data.to_string());
    (keys, manifest)
}

#[tokio::test]
async fn an_upload_goes_once_and_a_repeat_is_recognised() {
    let archive = archive();
    let (keys, manifest) = segment(&archive, b"zst-bytes");
    let first = archive
        .upload(&keys, Bytes::from_static(b"zst-bytes"), &manifest)
        .await;
    assert_eq!(first.unwrap(), Stored::Created);
    let again = archive
        .upload(&keys, Bytes::from_static(b"zst-bytes"), &manifest)
        .await;
    assert_eq!(again.unwrap(), Stored::AlreadyThere);
    assert_eq!(
        archive.fetch(&keys.data).await.unwrap(),
        Bytes::from_static(b"zst-bytes")
    );
    assert_eq!(archive.manifest(&keys.manifest).await.unwrap().unwrap(), manifest);
    assert_eq!(archive.list(&archive.layout().nodes()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn data_left_by_an_interrupted_upload_is_completed_not_duplicated() {
    let archive = archive();
    let (keys, manifest) = segment(&archive, b"zst-bytes");
    // The crash came after the data and before the manifest.
    archive
        .put_new(&keys.data, Bytes::from_static(b"zst-bytes"))
        .await
        .unwrap();
    assert!(archive.manifest(&keys.manifest).await.unwrap().is_none());
    let done = archive
        .upload(&keys, Bytes::from_static(b"zst-bytes"), &manifest)
        .await;
    assert_eq!(done.unwrap(), Stored::Created);
    assert!(archive.manifest(&keys.manifest).await.unwrap().is_some());
}

#[tokio::test]
async fn something_else_under_the_key_is_a_conflict_and_stays() {
    let archive = archive();
    let (keys, manifest) = segment(&archive, b"zst-bytes");
    archive
        .put_new(&keys.data, Bytes::from_static(b"other"))
        .await
        .unwrap();
    let error = archive
        .upload(&keys, Bytes::from_static(b"zst-bytes"), &manifest)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ArchiveError::Conflict {
                found: 5,
                expected: 9,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        archive.fetch(&keys.data).await.unwrap(),
        Bytes::from_static(b"other")
    );
    assert!(archive.manifest(&keys.manifest).await.unwrap().is_none());
    // A manifest of other contents under the key is one too.
    let (_, mut other) = segment(&archive, b"zst-bytes");
    other.stored_sha256 = sha256_hex(b"different");
    archive
        .put_new(&keys.manifest, Bytes::from(other.to_bytes()))
        .await
        .unwrap();
    let error = archive
        .upload(&keys, Bytes::from_static(b"zst-bytes"), &manifest)
        .await;
    assert!(matches!(error, Err(ArchiveError::Conflict { .. })));
}

#[tokio::test]
async fn a_local_folder_is_an_archive_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let archive = Archive::open(&url, "prod").unwrap();
    archive.check().await.unwrap();
    let (keys, manifest) = segment(&archive, b"zst-bytes");
    archive
        .upload(&keys, Bytes::from_static(b"zst-bytes"), &manifest)
        .await
        .unwrap();
    assert!(dir.path().join(keys.manifest.as_ref()).is_file());
    let missing = format!("file://{}/nope", dir.path().display());
    let error = Archive::open(&missing, "prod").unwrap_err();
    assert!(matches!(error, ArchiveError::NoBucket { .. }), "{error}");
    let error = Archive::open("ftp://x/y", "prod").unwrap_err().to_string();
    assert!(error.contains("unknown scheme \"ftp\""), "{error}");
}
