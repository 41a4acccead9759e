//! The gallery against real stores: every case runs on the in-memory store
//! and on the embedded filesystem store.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use facefleet_gallery::store::GalleryError;
use facefleet_gallery::{CollectionInfo, Gallery, GalleryCache, Index, NewFace, PersonSummary, DEFAULT_COLLECTION};
use facefleet_ports::memory::MemStore;
use facefleet_ports::{ObjectStore, PortError};

const BUCKET: &str = "ff-gallery";
const MODEL: &str = "m";

/// A store with the gallery bucket, and what keeps it alive.
type Subject = (Arc<dyn ObjectStore>, Option<tempfile::TempDir>);

async fn memory() -> Subject {
    let store: Arc<dyn ObjectStore> = Arc::new(MemStore::new());
    store.create_bucket(BUCKET).await.unwrap();
    (store, None)
}

async fn filesystem() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let (store, _queue) = facefleet_embedded::EmbeddedBackend::open(dir.path()).unwrap();
    store.create_bucket(BUCKET).await.unwrap();
    (store, Some(dir))
}

/// Runs each case once per store.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = super::memory().await;
                    super::$case(store).await;
                }
            )*
        }
        mod filesystem_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = super::filesystem().await;
                    super::$case(store).await;
                }
            )*
        }
    };
}

on_both_stores!(
    add_list_and_remove,
    rename_and_conflict,
    collections_are_separate,
    deleting_default_empties_it,
    names_and_faces_are_checked,
    thumbnails_follow_their_faces,
    concurrent_writers_lose_nothing,
    readers_never_see_a_torn_collection,
    old_layout_is_migrated_by_a_reader,
    old_layout_is_migrated_by_a_writer,
    corrupt_snapshot_is_reported,
    cache_follows_changes,
    concurrent_removals_of_a_person_add_up,
    concurrent_renames_onto_one_name_merge_nobody,
    concurrent_removals_of_a_face_answer_true_once,
    concurrent_creations_create_once,
    emptying_default_during_an_enrollment_keeps_no_half_of_it,
    faces_added_once_are_added_once,
);

/// A unit vector along axis `i` of 4.
fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; 4];
    v[i] = 1.0;
    v
}

fn faces(n: usize, axis_of: usize) -> Vec<NewFace> {
    (0..n).map(|_| NewFace::new(axis(axis_of), MODEL)).collect()
}

fn summary(list: &[(&str, usize)]) -> Vec<PersonSummary> {
    list.iter().map(|(n, f)| PersonSummary { name: n.to_string(), faces: *f }).collect()
}

async fn add_list_and_remove(store: Arc<dyn ObjectStore>) {
    let g = Gallery::new(store, BUCKET);
    let c = DEFAULT_COLLECTION;
    assert!(g.people(c).await.unwrap().is_empty());
    let ann = g.add_faces(c, "Ann", faces(2, 0)).await.unwrap();
    let bob = g.add_faces(c, "Bob", faces(1, 1)).await.unwrap();
    assert_eq!(ann.len(), 2);
    assert!(ann.iter().all(|f| f.person == "Ann" && f.model == MODEL && f.embedding == axis(0) && f.created_ms > 0));
    assert_ne!(ann[0].id, ann[1].id);
    assert_eq!(g.people(c).await.unwrap(), summary(&[("Ann", 2), ("Bob", 1)]));
    assert_eq!(g.faces_of(c, "Ann").await.unwrap(), ann);
    assert!(g.faces_of(c, "Nobody").await.unwrap().is_empty());

    assert!(g.remove_face(c, &ann[0].id).await.unwrap());
    assert!(!g.remove_face(c, &ann[0].id).await.unwrap(), "removed twice");
    assert!(!g.remove_face(c, "no-such-face").await.unwrap());
    assert!(!g.remove_face(c, "../../escape").await.unwrap());
    assert_eq!(g.remove_person(c, "Bob").await.unwrap(), 1);
    assert_eq!(g.remove_person(c, "Bob").await.unwrap(), 0);
    assert_eq!(g.remove_person(c, &bob[0].person).await.unwrap(), 0);

    let snapshot = g.load(c).await.unwrap();
    assert_eq!(snapshot.collection, c);
    assert_eq!(snapshot.faces, vec![ann[1].clone()]);
    // A second handle (another process) sees the same.
    let other = Gallery::new(g.store().clone(), BUCKET);
    assert_eq!(other.load(c).await.unwrap().faces, snapshot.faces);
}

async fn rename_and_conflict(store: Arc<dyn ObjectStore>) {
    let g = Gallery::new(store, BUCKET).with_compact_after(2);
    let c = DEFAULT_COLLECTION;
    g.add_faces(c, "Ann", faces(2, 0)).await.unwrap();
    g.add_faces(c, "Bob", faces(1, 1)).await.unwrap();
    assert_eq!(g.rename_person(c, "Ann", "Anna").await.unwrap(), 2);
    assert_eq!(g.rename_person(c, "Ann", "Anne").await.unwrap(), 0, "unknown `from`");
    match g.rename_person(c, "Anna", "Bob").await {
        Err(GalleryError::Conflict(msg)) => assert!(msg.contains("Bob"), "{msg}"),
        other => panic!("renaming onto an existing person: {other:?}"),
    }
    assert_eq!(g.rename_person(c, "Anna", "Anna").await.unwrap(), 2, "same name: nothing to do");
    assert_eq!(g.people(c).await.unwrap(), summary(&[("Anna", 2), ("Bob", 1)]));
    assert!(g.faces_of(c, "Ann").await.unwrap().is_empty());
    // Later adds under the old name are a new person.
    g.add_faces(c, "Ann", faces(1, 2)).await.unwrap();
    assert_eq!(g.people(c).await.unwrap(), summary(&[("Ann", 1), ("Anna", 2), ("Bob", 1)]));
}

async fn collections_are_separate(store: Arc<dyn ObjectStore>) {
    let g = Gallery::new(store, BUCKET);
    assert!(g.create_collection("tenant-1").await.unwrap());
    assert!(!g.create_collection("tenant-1").await.unwrap(), "created twice");
    assert!(!g.create_collection(DEFAULT_COLLECTION).await.unwrap(), "default always exists");
    assert!(g.collection_exists("tenant-1").await.unwrap());
    assert!(g.collection_exists(DEFAULT_COLLECTION).await.unwrap());
    assert!(!g.collection_exists("nope").await.unwrap());

    g.add_faces("tenant-1", "Ann", faces(2, 0)).await.unwrap();
    g.add_faces(DEFAULT_COLLECTION, "Bob", faces(1, 1)).await.unwrap();
    assert_eq!(
        g.collections().await.unwrap(),
        vec![
            CollectionInfo { name: "default".into(), people: 1, faces: 1 },
            CollectionInfo { name: "tenant-1".into(), people: 1, faces: 2 },
        ]
    );
    // Ann is only ever in tenant-1.
    assert!(g.faces_of(DEFAULT_COLLECTION, "Ann").await.unwrap().is_empty());
    let cache = GalleryCache::new(g.clone(), MODEL, Duration::ZERO);
    let default_index = cache.index(DEFAULT_COLLECTION).await.unwrap();
    let hits: Vec<String> = default_index.search(&axis(0), 10).into_iter().map(|c| c.person).collect();
    assert_eq!(hits, ["Bob"]);
    let tenant_index = cache.index("tenant-1").await.unwrap();
    assert_eq!((tenant_index.people(), tenant_index.faces()), (1, 2));
    assert_eq!(tenant_index.search(&axis(0), 10)[0].person, "Ann");

    for missing in ["nope"] {
        assert!(matches!(g.add_faces(missing, "Ann", faces(1, 0)).await, Err(GalleryError::NoSuchCollection(c)) if c == missing));
        assert!(matches!(g.load(missing).await, Err(GalleryError::NoSuchCollection(_))));
        assert!(matches!(g.people(missing).await, Err(GalleryError::NoSuchCollection(_))));
        assert!(matches!(g.remove_person(missing, "Ann").await, Err(GalleryError::NoSuchCollection(_))));
        assert!(matches!(g.remove_face(missing, "abc").await, Err(GalleryError::NoSuchCollection(_))));
        assert!(matches!(g.rename_person(missing, "Ann", "Bo").await, Err(GalleryError::NoSuchCollection(_))));
        assert!(matches!(cache.index(missing).await, Err(GalleryError::NoSuchCollection(_))));
    }

    assert!(g.delete_collection("tenant-1").await.unwrap());
    assert!(!g.delete_collection("tenant-1").await.unwrap(), "deleted twice");
    assert!(matches!(g.load("tenant-1").await, Err(GalleryError::NoSuchCollection(_))));
    assert!(matches!(cache.index("tenant-1").await, Err(GalleryError::NoSuchCollection(_))));
    assert!(g.store().list_all(BUCKET, "collections/tenant-1/").await.unwrap().is_empty(), "objects left behind");
    assert_eq!(g.collections().await.unwrap(), vec![CollectionInfo { name: "default".into(), people: 1, faces: 1 }]);
    // Created again, it starts empty.
    assert!(g.create_collection("tenant-1").await.unwrap());
    assert!(g.load("tenant-1").await.unwrap().faces.is_empty());
    assert_eq!(g.load(DEFAULT_COLLECTION).await.unwrap().faces.len(), 1, "default untouched");
}

async fn deleting_default_empties_it(store: Arc<dyn ObjectStore>) {
    let g = Gallery::new(store, BUCKET).with_compact_after(2);
    g.create_collection("other").await.unwrap();
    g.add_faces("other", "Zoe", faces(1, 3)).await.unwrap();
    for i in 0..3 {
        let face = NewFace::new(axis(i), MODEL).with_thumbnail(Bytes::from_static(b"\xff\xd8\xff thumbnail"));
        g.add_faces(DEFAULT_COLLECTION, &format!("P{i}"), vec![face]).await.unwrap();
    }
    assert!(g.load(DEFAULT_COLLECTION).await.unwrap().generation > 0, "compacted at least once");
    let thumbs = g.store().list_all(BUCKET, "collections/default/thumbs/").await.unwrap().len();
    assert!(g.delete_collection(DEFAULT_COLLECTION).await.unwrap());
    assert!(g.load(DEFAULT_COLLECTION).await.unwrap().faces.is_empty());
    assert!(g.people(DEFAULT_COLLECTION).await.unwrap().is_empty());
    assert!(g.store().list_all(BUCKET, "collections/default/thumbs/").await.unwrap().is_empty(), "{thumbs} thumbnails before");
    // Emptied through its log (a `clear` entry, folded at once), not by
    // deleting it: its marker stays, and so does a snapshot.
    assert!(g.store().head(BUCKET, "collections/default/collection.json").await.unwrap().is_some());
    assert!(g.store().list_all(BUCKET, "collections/default/log/").await.unwrap().is_empty());
    assert_eq!(g.store().list_all(BUCKET, "collections/default/snapshots/").await.unwrap().len(), 1);
    assert!(g.delete_collection(DEFAULT_COLLECTION).await.unwrap(), "emptying it again");
    assert_eq!(g.load("other").await.unwrap().faces.len(), 1, "other collections untouched");
    g.add_faces(DEFAULT_COLLECTION, "Ann", faces(1, 0)).await.unwrap();
    assert_eq!(g.people(DEFAULT_COLLECTION).await.unwrap(), summary(&[("Ann", 1)]));
}

async fn names_and_faces_are_checked(store: Arc<dyn ObjectStore>) {
    let g = Gallery::new(store, BUCKET);
    for bad in ["", " Ann", "a/b", "..", "x\ny"] {
        assert!(matches!(g.add_faces(DEFAULT_COLLECTION, bad, faces(1, 0)).await, Err(GalleryError::InvalidName(_))), "{bad:?}");
    }
    for bad in ["", "Tenant", "a/b", "-x", "a b"] {
        assert!(matches!(g.create_collection(bad).await, Err(GalleryError::InvalidName(_))), "{bad:?}");
        assert!(matches!(g.load(bad).await, Err(GalleryError::InvalidName(_))), "{bad:?}");
    }
    assert!(matches!(
        g.rename_person(DEFAULT_COLLECTION, "Ann", "a/b").await,
        Err(GalleryError::InvalidName(_))
    ));
    let bad_faces = [
        NewFace::new(vec![], MODEL),
        NewFace::new(vec![1.0, f32::NAN], MODEL),
        NewFace::new(vec![f32::INFINITY], MODEL),
        NewFace::new(vec![1.0], ""),
    ];
    for face in bad_faces {
        let r = g.add_faces(DEFAULT_COLLECTION, "Ann", vec![NewFace::new(axis(0), MODEL), face.clone()]).await;
        assert!(matches!(r, Err(GalleryError::InvalidFace(_))), "{face:?}: {r:?}");
    }
    assert!(g.load(DEFAULT_COLLECTION).await.unwrap().faces.is_empty(), "a refused batch stored nothing");
    assert!(g.add_faces(DEFAULT_COLLECTION, "Ann", vec![]).await.unwrap().is_empty());
}

async fn thumbnails_follow_their_faces(store: Arc<dyn ObjectStore>) {
    let g = Gallery::new(store, BUCKET);
    let c = DEFAULT_COLLECTION;
    let jpeg = Bytes::from_static(b"\xff\xd8\xff thumbnail");
    let added = g
        .add_faces(c, "Ann", vec![NewFace::new(axis(0), MODEL).with_thumbnail(jpeg.clone()), NewFace::new(axis(1), MODEL)])
        .await
        .unwrap();
    assert_eq!(g.thumbnail(c, &added[0].id).await.unwrap(), Some(jpeg.clone()));
    assert_eq!(g.thumbnail(c, &added[1].id).await.unwrap(), None, "no thumbnail given");
    assert_eq!(g.thumbnail(c, "unknown").await.unwrap(), None);
    assert_eq!(g.thumbnail(c, "../x").await.unwrap(), None);
    assert!(g.remove_face(c, &added[0].id).await.unwrap());
    assert_eq!(g.thumbnail(c, &added[0].id).await.unwrap(), None, "thumbnail removed with its face");
    let more = g.add_faces(c, "Bob", vec![NewFace::new(axis(2), MODEL).with_thumbnail(jpeg.clone())]).await.unwrap();
    assert_eq!(g.remove_person(c, "Bob").await.unwrap(), 1);
    assert_eq!(g.thumbnail(c, &more[0].id).await.unwrap(), None, "thumbnail removed with its person");
}

async fn concurrent_writers_lose_nothing(store: Arc<dyn ObjectStore>) {
    const TASKS: usize = 8;
    const ADDS: usize = 10;
    let g = Gallery::new(store, BUCKET);
    g.create_collection("busy").await.unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            // Each task is its own web tier: its own handle on the store.
            let g = Gallery::new(g.store().clone(), BUCKET);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..ADDS {
                    let c = if i % 3 == 0 { DEFAULT_COLLECTION } else { "busy" };
                    for f in g.add_faces(c, &format!("T{t}"), faces(1, (t + i) % 4)).await.unwrap() {
                        ids.push((c, f.id));
                    }
                }
                ids
            })
        })
        .collect();
    let mut written: Vec<(&str, String)> = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    assert_eq!(written.len(), TASKS * ADDS);
    for c in [DEFAULT_COLLECTION, "busy"] {
        let loaded = g.load(c).await.unwrap();
        let got: HashSet<&str> = loaded.faces.iter().map(|f| f.id.as_str()).collect();
        let want: HashSet<&str> = written.iter().filter(|(wc, _)| *wc == c).map(|(_, id)| id.as_str()).collect();
        assert_eq!(got, want, "collection {c}: faces lost or invented");
        assert_eq!(loaded.faces.len(), want.len(), "collection {c}: a face twice");
        assert!(loaded.generation > 0, "collection {c} was never compacted");
        // Compaction cleaned up behind itself: a handful of objects, not one per change.
        let log = g.store().list_all(BUCKET, &format!("collections/{c}/log/")).await.unwrap();
        let snaps = g.store().list_all(BUCKET, &format!("collections/{c}/snapshots/")).await.unwrap();
        assert!(log.len() < want.len(), "collection {c}: log of {} entries never compacted", log.len());
        assert!(snaps.len() <= TASKS, "collection {c}: {} snapshots kept", snaps.len());
    }
}

async fn readers_never_see_a_torn_collection(store: Arc<dyn ObjectStore>) {
    const WRITES: usize = 40;
    let writer = Gallery::new(store.clone(), BUCKET).with_compact_after(3);
    // Ids whose add has returned, in order.
    let committed: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = {
        let (committed, done) = (committed.clone(), done.clone());
        tokio::spawn(async move {
            for i in 0..WRITES {
                let added = writer.add_faces(DEFAULT_COLLECTION, &format!("P{}", i % 5), faces(1, i % 4)).await.unwrap();
                committed.lock().unwrap().extend(added.into_iter().map(|f| f.id));
                if i % 7 == 6 {
                    // Removals too: the removed face must never reappear.
                    let gone = committed.lock().unwrap().remove(0);
                    assert!(writer.remove_face(DEFAULT_COLLECTION, &gone).await.unwrap());
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (committed, done, store) = (committed.clone(), done.clone(), store.clone());
            tokio::spawn(async move {
                let reader = Gallery::new(store, BUCKET);
                let mut loads = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || loads < 3 {
                    let before: Vec<String> = committed.lock().unwrap().clone();
                    let seen: HashSet<String> = reader.load(DEFAULT_COLLECTION).await.unwrap().faces.into_iter().map(|f| f.id).collect();
                    let after: HashSet<String> = committed.lock().unwrap().iter().cloned().collect();
                    for id in &before {
                        // Present before the read started and not removed since: must be seen.
                        if after.contains(id) {
                            assert!(seen.contains(id), "face {id} committed before the read is missing");
                        }
                    }
                    loads += 1;
                }
                loads
            })
        })
        .collect();
    w.await.unwrap();
    for r in readers {
        assert!(r.await.unwrap() >= 3);
    }
    let g = Gallery::new(store, BUCKET);
    let final_ids: HashSet<String> = g.load(DEFAULT_COLLECTION).await.unwrap().faces.into_iter().map(|f| f.id).collect();
    let want: HashSet<String> = committed.lock().unwrap().iter().cloned().collect();
    assert_eq!(final_ids, want);
}

/// A handle of its own (another web tier), compacting often so that
/// compactions run in the middle of the changes.
fn tier(store: &Arc<dyn ObjectStore>) -> Gallery {
    Gallery::new(store.clone(), BUCKET).with_compact_after(3)
}

/// Concurrent removals of one person report, together, exactly the faces
/// it had; readers meanwhile see all of them or none.
async fn concurrent_removals_of_a_person_add_up(store: Arc<dyn ObjectStore>) {
    const CALLS: usize = 10;
    const FACES: usize = 20;
    let g = tier(&store);
    let c = DEFAULT_COLLECTION;
    g.add_faces(c, "Bob", faces(3, 1)).await.unwrap();
    for round in 0..3 {
        let person = format!("Ann {round}");
        for _ in 0..4 {
            g.add_faces(c, &person, faces(FACES / 4, 0)).await.unwrap();
        }
        let start = Arc::new(tokio::sync::Barrier::new(2 * CALLS));
        let removers: Vec<_> = (0..CALLS)
            .map(|_| {
                let (g, person, start) = (tier(&store), person.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    g.remove_person(c, &person).await.unwrap()
                })
            })
            .collect();
        let readers: Vec<_> = (0..CALLS)
            .map(|_| {
                let (g, person, start) = (tier(&store), person.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let people = g.people(c).await.unwrap();
                    let seen = people.iter().find(|p| p.name == person).map_or(0, |p| p.faces);
                    assert!(seen == 0 || seen == FACES, "a reader saw {seen} of {FACES} faces of a person removed at once");
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in removers {
            answers.push(t.await.unwrap());
        }
        for t in readers {
            t.await.unwrap();
        }
        assert_eq!(answers.iter().sum::<usize>(), FACES, "round {round}: answers {answers:?}");
        assert_eq!(answers.iter().filter(|n| **n > 0).count(), 1, "round {round}: answers {answers:?}");
        for handle in [&g, &tier(&store)] {
            assert!(handle.faces_of(c, &person).await.unwrap().is_empty());
        }
        // Again, alone: nothing left.
        assert_eq!(g.remove_person(c, &person).await.unwrap(), 0);
    }
    assert_eq!(g.people(c).await.unwrap(), summary(&[("Bob", 3)]));
}

/// Concurrent renames of several people onto one new name: exactly one
/// succeeds, the others conflict, and nobody's faces are merged.
async fn concurrent_renames_onto_one_name_merge_nobody(store: Arc<dyn ObjectStore>) {
    let g = tier(&store);
    g.create_collection("renames").await.unwrap();
    let c = "renames";
    for round in 0..4 {
        let to = format!("Zed {round}");
        // Person i has i + 1 faces, so a count tells who won.
        let from: Vec<String> = (0..4).map(|i| format!("P{round}-{i}")).collect();
        for (i, name) in from.iter().enumerate() {
            g.add_faces(c, name, faces(i + 1, i)).await.unwrap();
        }
        let start = Arc::new(tokio::sync::Barrier::new(from.len()));
        let tasks: Vec<_> = from
            .iter()
            .map(|name| {
                let (g, name, to, start) = (tier(&store), name.clone(), to.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    g.rename_person(c, &name, &to).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(moved) => {
                    assert_eq!(moved, i + 1, "round {round}: {} moved {moved} faces", from[i]);
                    winners.push(i);
                }
                Err(GalleryError::Conflict(msg)) => assert!(msg.contains(&to), "{msg}"),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?} all renamed onto {to}");
        let won = winners[0];
        let people = tier(&store).people(c).await.unwrap();
        for (i, name) in from.iter().enumerate() {
            let faces_of = |n: &str| people.iter().find(|p| p.name == n).map(|p| p.faces);
            if i == won {
                assert_eq!(faces_of(name), None, "round {round}: {name} was renamed");
            } else {
                assert_eq!(faces_of(name), Some(i + 1), "round {round}: {name} lost faces");
            }
        }
        assert_eq!(people.iter().find(|p| p.name == to).map(|p| p.faces), Some(won + 1), "round {round}: merged into {to}");
    }

    // A rename and a removal of the same person: one of them gets the faces.
    for round in 0..4 {
        let (name, to) = (format!("Ann {round}"), format!("Anna {round}"));
        g.add_faces(c, &name, faces(5, 0)).await.unwrap();
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let renamer = {
            let (g, name, to, start) = (tier(&store), name.clone(), to.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                g.rename_person(c, &name, &to).await.unwrap()
            })
        };
        let remover = {
            let (g, name, start) = (tier(&store), name.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                g.remove_person(c, &name).await.unwrap()
            })
        };
        let (renamed, removed) = (renamer.await.unwrap(), remover.await.unwrap());
        assert!((renamed, removed) == (5, 0) || (renamed, removed) == (0, 5), "round {round}: renamed {renamed}, removed {removed}");
        let left = g.faces_of(c, &to).await.unwrap().len();
        assert_eq!(left, renamed, "round {round}: {to} has {left} faces");
        assert!(g.faces_of(c, &name).await.unwrap().is_empty());
    }
}

/// Concurrent removals of one face: exactly one answers true.
async fn concurrent_removals_of_a_face_answer_true_once(store: Arc<dyn ObjectStore>) {
    const CALLS: usize = 10;
    let g = tier(&store);
    let c = DEFAULT_COLLECTION;
    for round in 0..4 {
        let added = g.add_faces(c, "Ann", faces(2, 0)).await.unwrap();
        let start = Arc::new(tokio::sync::Barrier::new(CALLS));
        let tasks: Vec<_> = (0..CALLS)
            .map(|_| {
                let (g, id, start) = (tier(&store), added[0].id.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    g.remove_face(c, &id).await.unwrap()
                })
            })
            .collect();
        let mut trues = 0;
        for t in tasks {
            trues += usize::from(t.await.unwrap());
        }
        assert_eq!(trues, 1, "round {round}: {trues} calls removed the same face");
        let left: Vec<String> = g.faces_of(c, "Ann").await.unwrap().into_iter().map(|f| f.id).collect();
        assert!(!left.contains(&added[0].id) && left.contains(&added[1].id), "round {round}: {left:?}");
        assert!(!g.remove_face(c, &added[0].id).await.unwrap());
    }
}

/// Writes `people/<name>/<uuid>.json` entries of the old layout.
async fn old_layout(store: &dyn ObjectStore) -> Vec<String> {
    let mut keys = Vec::new();
    for (name, ids) in [("Ann", ["0b6f7e52-1f6b-4e7a-9d55-0c2f6b1d0001", "0b6f7e52-1f6b-4e7a-9d55-0c2f6b1d0002"]), ("Bob", ["0b6f7e52-1f6b-4e7a-9d55-0c2f6b1d0003", ""])] {
        for (i, id) in ids.into_iter().enumerate().filter(|(_, id)| !id.is_empty()) {
            let key = format!("people/{name}/{id}.json");
            let body = serde_json::json!({"name": name, "recognizer": MODEL, "embedding": axis(i)});
            store.put(BUCKET, &key, Bytes::from(body.to_string())).await.unwrap();
            keys.push(key);
        }
    }
    // Not an entry: ignored.
    store.put(BUCKET, "people/README", Bytes::from_static(b"x")).await.unwrap();
    keys
}

async fn old_layout_is_migrated_by_a_reader(store: Arc<dyn ObjectStore>) {
    let keys = old_layout(store.as_ref()).await;
    let g = Gallery::new(store.clone(), BUCKET);
    let loaded = g.load(DEFAULT_COLLECTION).await.unwrap();
    assert_eq!(loaded.people(), summary(&[("Ann", 2), ("Bob", 1)]));
    let ids: HashSet<&str> = loaded.faces.iter().map(|f| f.id.as_str()).collect();
    assert!(ids.contains("0b6f7e52-1f6b-4e7a-9d55-0c2f6b1d0001"), "the old uuid stays the face id: {ids:?}");
    assert!(loaded.faces.iter().all(|f| f.model == MODEL));
    for key in &keys {
        assert_eq!(store.head(BUCKET, key).await.unwrap(), None, "{key} not deleted after migration");
    }
    // The faces are now in a snapshot: every handle sees them.
    let again = Gallery::new(store.clone(), BUCKET).load(DEFAULT_COLLECTION).await.unwrap();
    assert_eq!(again.faces, loaded.faces);
    assert_eq!(again.generation, 1);
    let g2 = Gallery::new(store, BUCKET);
    assert_eq!(g2.remove_person(DEFAULT_COLLECTION, "Ann").await.unwrap(), 2);
    assert_eq!(g2.people(DEFAULT_COLLECTION).await.unwrap(), summary(&[("Bob", 1)]));
}

async fn old_layout_is_migrated_by_a_writer(store: Arc<dyn ObjectStore>) {
    let keys = old_layout(store.as_ref()).await;
    // Compacting at every write: the first write folds the old layout.
    let g = Gallery::new(store.clone(), BUCKET).with_compact_after(1);
    g.add_faces(DEFAULT_COLLECTION, "Cid", faces(1, 3)).await.unwrap();
    for key in &keys {
        assert_eq!(store.head(BUCKET, key).await.unwrap(), None, "{key} not deleted after migration");
    }
    let g2 = Gallery::new(store, BUCKET);
    assert_eq!(g2.people(DEFAULT_COLLECTION).await.unwrap(), summary(&[("Ann", 2), ("Bob", 1), ("Cid", 1)]));
    // Other collections never take the old layout.
    g2.create_collection("fresh").await.unwrap();
    assert!(g2.load("fresh").await.unwrap().faces.is_empty());
}

async fn corrupt_snapshot_is_reported(store: Arc<dyn ObjectStore>) {
    let g = Gallery::new(store.clone(), BUCKET).with_compact_after(1);
    g.add_faces(DEFAULT_COLLECTION, "Ann", faces(1, 0)).await.unwrap();
    let snaps = store.list_all(BUCKET, "collections/default/snapshots/").await.unwrap();
    assert_eq!(snaps.len(), 1);
    let good = store.get(BUCKET, &snaps[0].key).await.unwrap();
    let damaged: [Bytes; 3] = [
        Bytes::from_static(b"not a snapshot at all"),
        good.slice(..good.len() - 2),
        Bytes::from([&good[..], b"junk"].concat()),
    ];
    for body in damaged {
        store.put(BUCKET, &snaps[0].key, body).await.unwrap();
        match g.load(DEFAULT_COLLECTION).await {
            Err(GalleryError::Corrupt(msg)) => assert!(msg.contains(&snaps[0].key), "{msg}"),
            other => panic!("damaged snapshot: expected Corrupt, got {other:?}"),
        }
    }
    // A snapshot whose name and contents disagree is refused too.
    store.put(BUCKET, "collections/default/snapshots/000000000009.bin", good).await.unwrap();
    assert!(matches!(g.load(DEFAULT_COLLECTION).await, Err(GalleryError::Corrupt(_))));
    // So is a damaged log entry.
    store.delete(BUCKET, "collections/default/snapshots/000000000009.bin").await.unwrap();
    store.delete(BUCKET, &snaps[0].key).await.unwrap();
    store.put(BUCKET, "collections/default/log/0000000000001.json", Bytes::from_static(b"{\"op\":\"explode\"}")).await.unwrap();
    assert!(matches!(g.load(DEFAULT_COLLECTION).await, Err(GalleryError::Corrupt(_))));
    // Emptying an unreadable `default` repairs it: every object goes.
    assert!(g.delete_collection(DEFAULT_COLLECTION).await.unwrap());
    assert!(g.load(DEFAULT_COLLECTION).await.unwrap().faces.is_empty());
    g.add_faces(DEFAULT_COLLECTION, "Bob", faces(1, 1)).await.unwrap();
    assert_eq!(g.people(DEFAULT_COLLECTION).await.unwrap(), summary(&[("Bob", 1)]));
}

async fn cache_follows_changes(store: Arc<dyn ObjectStore>) {
    let writer = Gallery::new(store.clone(), BUCKET).with_compact_after(3);
    writer.add_faces(DEFAULT_COLLECTION, "Ann", faces(1, 0)).await.unwrap();
    assert!(writer.compact(DEFAULT_COLLECTION).await.unwrap());

    let watched = Gallery::new(store.clone(), BUCKET);
    let cache = GalleryCache::new(watched.clone(), MODEL, Duration::ZERO);
    let first = cache.index(DEFAULT_COLLECTION).await.unwrap();
    assert_eq!(first.faces(), 1);

    // Nothing changed: two list calls, the same index.
    let before = watched.reads();
    let same = cache.index(DEFAULT_COLLECTION).await.unwrap();
    assert!(Arc::ptr_eq(&first, &same), "an unchanged collection was rebuilt");
    assert_eq!(watched.reads() - before, 2, "an unchanged check costs two lists");

    // One new change: two lists and one get (the new log entry; the
    // snapshot is the one already read).
    writer.add_faces(DEFAULT_COLLECTION, "Bob", faces(1, 1)).await.unwrap();
    let before = watched.reads();
    let second = cache.index(DEFAULT_COLLECTION).await.unwrap();
    assert_eq!(watched.reads() - before, 3);
    assert_eq!((second.faces(), second.people()), (2, 2));
    assert_eq!(second.search(&axis(1), 1)[0].person, "Bob");

    // Through a compaction, removals and a rename.
    writer.add_faces(DEFAULT_COLLECTION, "Cid", faces(2, 2)).await.unwrap();
    writer.remove_person(DEFAULT_COLLECTION, "Ann").await.unwrap();
    writer.rename_person(DEFAULT_COLLECTION, "Bob", "Rob").await.unwrap();
    let third = cache.index(DEFAULT_COLLECTION).await.unwrap();
    let people: Vec<String> = third.search(&[1.0, 1.0, 1.0, 0.0], 10).into_iter().map(|c| c.person).collect();
    assert_eq!(people, ["Cid", "Rob"]);
    assert_eq!(third.faces(), 3);
    let fresh = Index::build(&writer.load(DEFAULT_COLLECTION).await.unwrap(), MODEL);
    assert_eq!((fresh.faces(), fresh.people()), (third.faces(), third.people()));

    // A long refresh period serves the cached index until invalidated.
    let lazy = GalleryCache::new(Gallery::new(store, BUCKET), MODEL, Duration::from_secs(3600));
    let held = lazy.index(DEFAULT_COLLECTION).await.unwrap();
    writer.add_faces(DEFAULT_COLLECTION, "Dan", faces(1, 3)).await.unwrap();
    let before = lazy.gallery().reads();
    assert!(Arc::ptr_eq(&held, &lazy.index(DEFAULT_COLLECTION).await.unwrap()));
    assert_eq!(lazy.gallery().reads(), before, "checked the store within the refresh period");
    lazy.invalidate(DEFAULT_COLLECTION);
    assert_eq!(lazy.index(DEFAULT_COLLECTION).await.unwrap().faces(), 4);

    // A collection deleted under the cache.
    writer.create_collection("gone").await.unwrap();
    writer.add_faces("gone", "Eve", faces(1, 0)).await.unwrap();
    assert_eq!(cache.index("gone").await.unwrap().faces(), 1);
    writer.delete_collection("gone").await.unwrap();
    assert!(matches!(cache.index("gone").await, Err(GalleryError::NoSuchCollection(_))));
    // An empty collection deleted under the cache.
    writer.create_collection("empty").await.unwrap();
    assert_eq!(cache.index("empty").await.unwrap().faces(), 0);
    writer.delete_collection("empty").await.unwrap();
    assert!(matches!(cache.index("empty").await, Err(GalleryError::NoSuchCollection(_))));
}

/// 10,000 faces load in a constant number of reads (memory store; the
/// filesystem is measured by the `gallery_bench` example).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_faces_load_in_at_most_ten_reads() {
    let (store, _guard) = memory().await;
    let writer = Gallery::new(store.clone(), BUCKET);
    let dim = 192;
    for batch in 0..10 {
        let faces: Vec<NewFace> = (0..1000)
            .map(|i| {
                let mut e = vec![0.0f32; dim];
                e[(batch * 1000 + i) % dim] = 1.0;
                NewFace::new(e, "mobilefacenet")
            })
            .collect();
        writer.add_faces(DEFAULT_COLLECTION, &format!("person {batch}"), faces).await.unwrap();
    }
    let reader = Gallery::new(store, BUCKET);
    let snapshot = reader.load(DEFAULT_COLLECTION).await.unwrap();
    assert_eq!(snapshot.faces.len(), 10_000);
    assert!(snapshot.generation >= 1);
    assert!(reader.reads() <= 10, "{} reads for 10,000 faces", reader.reads());
    let index = Index::build(&snapshot, "mobilefacenet");
    assert_eq!((index.faces(), index.people(), index.dim()), (10_000, 10, dim));
}

/// Store failures come back as `Store` errors with their source.
#[tokio::test]
async fn store_failures_are_store_errors() {
    let store = Arc::new(MemStore::new());
    store.create_bucket(BUCKET).await.unwrap();
    let g = Gallery::new(store.clone(), BUCKET);
    *store.fail_puts_to.lock().unwrap() = Some(BUCKET.to_string());
    match g.add_faces(DEFAULT_COLLECTION, "Ann", faces(1, 0)).await {
        Err(GalleryError::Store(PortError::Unavailable(_))) => {}
        other => panic!("expected a Store error, got {other:?}"),
    }
    *store.fail_puts_to.lock().unwrap() = None;
    assert!(g.load(DEFAULT_COLLECTION).await.unwrap().faces.is_empty());
    let missing = Gallery::new(store, "no-such-bucket");
    assert!(matches!(missing.load(DEFAULT_COLLECTION).await, Err(GalleryError::Store(PortError::NoSuchBucket(_)))));
}

async fn concurrent_creations_create_once(store: Arc<dyn ObjectStore>) {
    for round in 0..5 {
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let g = Gallery::new(store.clone(), BUCKET);
                tokio::spawn(async move { g.create_collection("dup").await.unwrap() })
            })
            .collect();
        let created = futures::future::join_all(tasks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
        assert_eq!(created, 1, "round {round}: one creation answers created");
        let g = Gallery::new(store.clone(), BUCKET);
        assert!(g.collection_exists("dup").await.unwrap(), "round {round}: its marker survived the others");
        assert!(g.delete_collection("dup").await.unwrap());
    }
    // A creation under way (its lock is fresh): "exists"; a lock left by a
    // creator that died long ago is taken over.
    let g = Gallery::new(store.clone(), BUCKET);
    let lock = |ms: u64| Bytes::from(format!(r#"{{"name":"dup","created_ms":{ms}}}"#));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    store.put(BUCKET, "collections/dup.creating", lock(now)).await.unwrap();
    assert!(!g.create_collection("dup").await.unwrap());
    store.put(BUCKET, "collections/dup.creating", lock(0)).await.unwrap();
    assert!(g.create_collection("dup").await.unwrap());
    assert!(store.head(BUCKET, "collections/dup.creating").await.unwrap().is_none(), "the lock is released");
    assert_eq!(g.collections().await.unwrap().iter().filter(|c| c.name == "dup").count(), 1);
}

async fn faces_added_once_are_added_once(store: Arc<dyn ObjectStore>) {
    let ids = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let with_thumb = |n: usize| faces(n, 0).into_iter().map(|f| f.with_thumbnail(Bytes::from_static(b"jpeg"))).collect::<Vec<_>>();
    // Sent by eight writers at once, then once more: each id lands once, and
    // every call answers the records it asked for.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let g = Gallery::new(store.clone(), BUCKET).with_compact_after(3);
            let (faces, ids) = (with_thumb(2), ids(&["a1", "a2"]));
            tokio::spawn(async move { g.add_faces_once(DEFAULT_COLLECTION, "Ann", faces, ids).await.unwrap() })
        })
        .collect();
    for r in futures::future::join_all(tasks).await {
        assert_eq!(r.unwrap().iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["a1", "a2"]);
    }
    let g = Gallery::new(store.clone(), BUCKET);
    let again = g.add_faces_once(DEFAULT_COLLECTION, "Ann", with_thumb(2), ids(&["a1", "a2"])).await.unwrap();
    assert_eq!(again.len(), 2);
    let stored = g.faces_of(DEFAULT_COLLECTION, "Ann").await.unwrap();
    assert_eq!(stored.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["a1", "a2"]);
    assert!(g.thumbnail(DEFAULT_COLLECTION, "a1").await.unwrap().is_some());
    // One new id among known ones: only it is added; plain adds are not checked.
    g.add_faces_once(DEFAULT_COLLECTION, "Ann", faces(2, 1), ids(&["a2", "a3"])).await.unwrap();
    g.add_faces(DEFAULT_COLLECTION, "Ann", faces(1, 1)).await.unwrap();
    assert_eq!(g.faces_of(DEFAULT_COLLECTION, "Ann").await.unwrap().len(), 4);
    g.compact(DEFAULT_COLLECTION).await.unwrap();
    assert_eq!(g.faces_of(DEFAULT_COLLECTION, "Ann").await.unwrap().len(), 4, "the same after folding the log");
    // Ids are checked: one per face, valid, all different.
    for bad in [ids(&["a9"]), ids(&["a/b", "c"]), ids(&["x", "x"])] {
        let e = g.add_faces_once(DEFAULT_COLLECTION, "Ann", faces(2, 0), bad.clone()).await.unwrap_err();
        assert!(matches!(e, GalleryError::InvalidFace(_)), "{bad:?}: {e}");
    }
}

/// A store that empties `default` (as `DELETE /v1/collections/default`
/// does) around the first log entry of `default` an enrollment claims:
/// after its thumbnails were written, just before its entry is written
/// (`before`) or just after (`!before`).
struct EmptiesDefaultMidway {
    inner: Arc<dyn ObjectStore>,
    before: bool,
    fired: std::sync::atomic::AtomicBool,
}

impl EmptiesDefaultMidway {
    async fn empty_default(&self) {
        Gallery::new(self.inner.clone(), BUCKET).delete_collection(DEFAULT_COLLECTION).await.unwrap();
    }
}

#[async_trait::async_trait]
impl ObjectStore for EmptiesDefaultMidway {
    async fn create_bucket(&self, bucket: &str) -> Result<(), PortError> {
        self.inner.create_bucket(bucket).await
    }
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, PortError> {
        self.inner.bucket_exists(bucket).await
    }
    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), PortError> {
        self.inner.put(bucket, key, body).await
    }
    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool, PortError> {
        let fire = key.starts_with("collections/default/log/") && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst);
        if fire && self.before {
            self.empty_default().await;
        }
        let put = self.inner.put_if_absent(bucket, key, body).await;
        if fire && !self.before {
            self.empty_default().await;
        }
        put
    }
    async fn get(&self, bucket: &str, key: &str) -> Result<Bytes, PortError> {
        self.inner.get(bucket, key).await
    }
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<facefleet_ports::ObjectMeta>, PortError> {
        self.inner.head(bucket, key).await
    }
    async fn list(&self, bucket: &str, prefix: &str, token: Option<String>, max_keys: usize) -> Result<facefleet_ports::ListPage, PortError> {
        self.inner.list(bucket, prefix, token, max_keys).await
    }
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), PortError> {
        self.inner.delete(bucket, key).await
    }
}

async fn emptying_default_during_an_enrollment_keeps_no_half_of_it(store: Arc<dyn ObjectStore>) {
    let jpeg = Bytes::from_static(b"\xff\xd8\xff thumbnail");
    let ann = || vec![NewFace::new(axis(0), MODEL).with_thumbnail(jpeg.clone())];
    let plain = Gallery::new(store.clone(), BUCKET);
    let thumbs = || async { store.list_all(BUCKET, "collections/default/thumbs/").await.unwrap().len() };
    // Bob is there before; every emptying below removes him and his thumbnail.
    let bob = || vec![NewFace::new(axis(1), MODEL).with_thumbnail(jpeg.clone())];

    // Emptied after the enrollment wrote its thumbnail, before its faces
    // land: the enrollment comes after the emptying and stays whole.
    plain.add_faces(DEFAULT_COLLECTION, "Bob", bob()).await.unwrap();
    let racing: Arc<dyn ObjectStore> = Arc::new(EmptiesDefaultMidway { inner: store.clone(), before: true, fired: false.into() });
    let added = Gallery::new(racing, BUCKET).add_faces(DEFAULT_COLLECTION, "Ann", ann()).await.unwrap();
    assert_eq!(plain.people(DEFAULT_COLLECTION).await.unwrap(), summary(&[("Ann", 1)]), "Bob went, Ann stayed");
    assert_eq!(plain.thumbnail(DEFAULT_COLLECTION, &added[0].id).await.unwrap(), Some(jpeg.clone()), "with her thumbnail");
    assert_eq!(thumbs().await, 1);

    // Emptied just after its faces landed: the emptying comes after the
    // enrollment and removes it, thumbnail and all.
    plain.add_faces(DEFAULT_COLLECTION, "Bob", bob()).await.unwrap();
    let racing: Arc<dyn ObjectStore> = Arc::new(EmptiesDefaultMidway { inner: store.clone(), before: false, fired: false.into() });
    let r = Gallery::new(racing, BUCKET).add_faces(DEFAULT_COLLECTION, "Cy", vec![NewFace::new(axis(2), MODEL).with_thumbnail(jpeg.clone())]).await;
    assert!(r.is_ok(), "{r:?}");
    assert!(plain.people(DEFAULT_COLLECTION).await.unwrap().is_empty());
    assert_eq!(thumbs().await, 0, "no thumbnail without its face");

    // Either way, the next enrollment lands whole.
    let added = plain.add_faces(DEFAULT_COLLECTION, "Ann", ann()).await.unwrap();
    assert_eq!(plain.thumbnail(DEFAULT_COLLECTION, &added[0].id).await.unwrap(), Some(jpeg.clone()));

    // An enrollment retried with its idempotency key after an emptying
    // comes back under the same ids, with its thumbnail.
    let retry = || vec![NewFace::new(axis(3), MODEL).with_thumbnail(jpeg.clone())];
    let first = plain.add_faces_once(DEFAULT_COLLECTION, "Dee", retry(), vec!["dee-1".into()]).await.unwrap();
    plain.delete_collection(DEFAULT_COLLECTION).await.unwrap();
    assert_eq!(plain.thumbnail(DEFAULT_COLLECTION, &first[0].id).await.unwrap(), None, "emptied with its face");
    plain.add_faces_once(DEFAULT_COLLECTION, "Dee", retry(), vec!["dee-1".into()]).await.unwrap();
    assert_eq!(plain.thumbnail(DEFAULT_COLLECTION, "dee-1").await.unwrap(), Some(jpeg.clone()));

    // Many enrollments, removals and emptyings at once (compacting often):
    // every face left has its thumbnail, and every thumbnail left its face.
    let g = Arc::new(Gallery::new(store.clone(), BUCKET).with_compact_after(3));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (g, jpeg) = (g.clone(), jpeg.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..3 {
                let face = NewFace::new(axis((w + i) % 4), MODEL).with_thumbnail(jpeg.clone());
                g.add_faces(DEFAULT_COLLECTION, &format!("W{w}"), vec![face]).await.unwrap();
            }
        }));
    }
    for _ in 0..3 {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            g.delete_collection(DEFAULT_COLLECTION).await.unwrap();
        }));
    }
    for r in 0..4 {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            for w in [r, r + 4, r] {
                g.remove_person(DEFAULT_COLLECTION, &format!("W{w}")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let faces = plain.load(DEFAULT_COLLECTION).await.unwrap().faces;
    for f in &faces {
        assert!(plain.thumbnail(DEFAULT_COLLECTION, &f.id).await.unwrap().is_some(), "face {} of {} has no thumbnail", f.id, f.person);
    }
    let thumbs = store.list_all(BUCKET, "collections/default/thumbs/").await.unwrap();
    let orphans: Vec<_> = thumbs.iter().filter(|m| !faces.iter().any(|f| m.key.ends_with(&format!("/{}.jpg", f.id)))).collect();
    assert!(orphans.is_empty(), "thumbnails without their faces: {orphans:?}");
}
