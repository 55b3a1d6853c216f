use super::*;

fn group(policy: DropPolicy, channel: &str, recoverable: bool) -> Arc<DropGroup> {
    Arc::new(DropGroup::new(policy, "ns", channel, recoverable))
}

/// A frame of `len` bytes whose first byte names it.
fn frame(name: u8, len: usize) -> Bytes {
    let mut v = vec![b'.'; len];
    v[0] = name;
    Bytes::from(v)
}

/// What the writer would write, by name, until the queue is empty.
async fn written(o: &Outbox) -> Vec<u8> {
    let mut v = Vec::new();
    if !o.is_closing() {
        o.close(Disconnect::SHUTDOWN);
    }
    while let Outgoing::Frames { .. } = o.next(&mut v).await {}
    v.iter().map(|f| f[0]).collect()
}

fn lost_of(p: &Pushed) -> Vec<(String, u64, bool)> {
    p.lost
        .iter()
        .flat_map(|l| l.iter())
        .map(|l| (l.group.channel.clone(), l.frames, l.recover))
        .collect()
}

#[tokio::test]
async fn overflow_closes_as_slow_and_drops_queue() {
    let o = Outbox::new(10);
    assert_eq!(
        o.push(Bytes::from_static(b"12345")).result,
        PushResult::Queued
    );
    assert_eq!(
        o.push(Bytes::from_static(b"123456")).result,
        PushResult::Overflow
    );
    assert_eq!(o.push(Bytes::from_static(b"1")).result, PushResult::Closed);
    let mut v = Vec::new();
    assert!(matches!(o.next(&mut v).await, Outgoing::Close(d) if d.code == 3008));
    assert!(v.is_empty());
}

#[tokio::test]
async fn frames_before_close_are_written() {
    let o = Outbox::new(100);
    let _ = o.push(Bytes::from_static(b"a"));
    let _ = o.push(Bytes::from_static(b"b"));
    o.close(Disconnect::SHUTDOWN);
    let mut v = Vec::new();
    assert!(matches!(
        o.next(&mut v).await,
        Outgoing::Frames { pong: None }
    ));
    assert_eq!(v.len(), 2);
    assert!(matches!(o.next(&mut v).await, Outgoing::Close(d) if d.code == 3001));
}

#[tokio::test]
async fn a_ping_wakes_the_writer_even_without_frames() {
    let o = Outbox::new(100);
    o.pong(Bytes::from_static(b"p1"));
    o.pong(Bytes::from_static(b"p2"));
    let mut v = Vec::new();
    match o.next(&mut v).await {
        Outgoing::Frames { pong } => assert_eq!(pong.as_deref(), Some(&b"p2"[..])),
        other => panic!("{other:?}"),
    }
    assert!(v.is_empty());
}

#[tokio::test]
async fn drop_newest_drops_the_new_push_and_keeps_the_queue() {
    let o = Outbox::new(30);
    let g = group(DropPolicy::Newest, "a", false);
    for name in [b'1', b'2', b'3'] {
        assert_eq!(
            o.push_droppable(frame(name, 10), &g, false).result,
            PushResult::Queued
        );
    }
    let p = o.push_droppable(frame(b'4', 10), &g, false);
    assert_eq!(p.result, PushResult::Dropped);
    assert_eq!(lost_of(&p), [("a".to_string(), 1, false)]);
    assert_eq!((o.queued_bytes(), o.dropped()), (30, 1));
    assert_eq!(written(&o).await, b"123");
}

#[tokio::test]
async fn drop_oldest_drops_the_oldest_pushes_of_any_channel_never_a_reply() {
    let o = Outbox::new(40);
    let a = group(DropPolicy::Oldest, "a", false);
    let b = group(DropPolicy::Newest, "b", false);
    let _ = o.push(frame(b'R', 10)); // a reply: never dropped
    let _ = o.push_droppable(frame(b'b', 10), &b, false);
    let _ = o.push_droppable(frame(b'1', 10), &a, false);
    let _ = o.push_droppable(frame(b'2', 10), &a, false);
    // Needs 15 bytes: the two oldest droppable pushes go, the reply in front stays.
    let p = o.push_droppable(frame(b'3', 15), &a, false);
    assert_eq!(p.result, PushResult::Queued);
    assert_eq!(
        lost_of(&p),
        [("b".to_string(), 1, false), ("a".to_string(), 1, false)]
    );
    assert_eq!((o.queued_bytes(), o.dropped()), (35, 2));
    assert_eq!(written(&o).await, b"R23");
}

#[tokio::test]
async fn drop_all_drops_every_queued_push_then_queues_the_new_one() {
    let o = Outbox::new(40);
    let a = group(DropPolicy::All, "a", false);
    let b = group(DropPolicy::Oldest, "b", false);
    let _ = o.push_droppable(frame(b'1', 10), &a, false);
    let _ = o.push(frame(b'R', 10));
    let _ = o.push_droppable(frame(b'b', 10), &b, false);
    let _ = o.push_droppable(frame(b'2', 10), &a, false);
    let p = o.push_droppable(frame(b'3', 10), &a, false);
    assert_eq!(p.result, PushResult::Queued);
    assert_eq!(
        lost_of(&p),
        [("a".to_string(), 2, false), ("b".to_string(), 1, false)]
    );
    assert_eq!((o.queued_bytes(), o.dropped()), (20, 3));
    assert_eq!(written(&o).await, b"R3");
}

#[tokio::test]
async fn a_frame_that_may_not_be_dropped_makes_room_then_closes_when_it_cannot() {
    let o = Outbox::new(30);
    let a = group(DropPolicy::Newest, "a", false);
    let _ = o.push_droppable(frame(b'1', 10), &a, false);
    let _ = o.push_droppable(frame(b'2', 10), &a, false);
    let _ = o.push(frame(b'R', 10));
    // A reply (or a push of a `close` namespace) drops the oldest droppable push.
    let p = o.push(frame(b'S', 10));
    assert_eq!(p.result, PushResult::Queued);
    assert_eq!(lost_of(&p), [("a".to_string(), 1, false)]);
    assert_eq!(o.dropped(), 1);
    // Even without the droppable push left it would not fit: the connection closes.
    let p = o.push(frame(b'T', 11));
    assert_eq!(p.result, PushResult::Overflow);
    assert!(p.lost.is_none());
    let mut v = Vec::new();
    assert!(matches!(o.next(&mut v).await, Outgoing::Close(d) if d.code == 3008));
    assert!(v.is_empty());
}

#[tokio::test]
async fn a_droppable_push_never_closes_the_connection() {
    let o = Outbox::new(30);
    let a = group(DropPolicy::Oldest, "a", false);
    let all = group(DropPolicy::All, "b", false);
    let _ = o.push(frame(b'R', 25));
    let _ = o.push_droppable(frame(b'1', 5), &a, false);
    // Even with every droppable push gone it would not fit: it is dropped, nothing else.
    for g in [&a, &all] {
        let p = o.push_droppable(frame(b'x', 10), g, false);
        assert_eq!(p.result, PushResult::Dropped);
        assert_eq!(lost_of(&p).len(), 1);
    }
    // Larger than the whole queue.
    let p = o.push_droppable(frame(b'y', 31), &a, false);
    assert_eq!(p.result, PushResult::Dropped);
    assert!(!o.is_closing());
    assert_eq!((o.queued_bytes(), o.dropped()), (30, 3));
    assert_eq!(written(&o).await, b"R1");
}

#[tokio::test]
async fn a_dropped_positioned_publication_makes_its_subscription_stale() {
    let o = Outbox::new(40);
    let h = group(DropPolicy::Oldest, "h", true);
    let other = group(DropPolicy::Oldest, "o", false);
    let _ = o.push_droppable(frame(b'1', 10), &h, true);
    let _ = o.push_droppable(frame(b'j', 5), &h, false); // a join: offset 0
    let _ = o.push_droppable(frame(b'2', 10), &h, true);
    let _ = o.push_droppable(frame(b'o', 10), &other, false);
    // Dropping publication 1 would let 2 through after a gap: every push of the
    // subscription goes, the new one (3) too, and it must recover, once.
    let p = o.push_droppable(frame(b'3', 10), &h, true);
    assert_eq!(p.result, PushResult::Dropped);
    assert_eq!(lost_of(&p), [("h".to_string(), 4, true)]);
    assert!(h.is_stale());
    // Nothing of it is queued any more (counted as dropped), and it does not recover again.
    let p = o.push_droppable(frame(b'4', 10), &h, true);
    assert_eq!(p.result, PushResult::Dropped);
    assert_eq!(lost_of(&p), [("h".to_string(), 1, false)]);
    assert_eq!(o.dropped(), 5);
    assert_eq!(written(&o).await, b"o");
}

#[tokio::test]
async fn drop_newest_keeps_what_came_before_the_gap() {
    let o = Outbox::new(20);
    let h = group(DropPolicy::Newest, "h", true);
    let _ = o.push_droppable(frame(b'1', 10), &h, true);
    let _ = o.push_droppable(frame(b'2', 10), &h, true);
    let p = o.push_droppable(frame(b'3', 10), &h, true);
    assert_eq!(p.result, PushResult::Dropped);
    assert_eq!(lost_of(&p), [("h".to_string(), 1, true)]);
    // The recovery push (not droppable) makes room by dropping one of them; the
    // subscription is already stale, so its other queued push goes as well.
    let p = o.push(frame(b'U', 10));
    assert_eq!(p.result, PushResult::Queued);
    assert_eq!(lost_of(&p), [("h".to_string(), 2, false)]);
    assert_eq!(written(&o).await, b"U");
}

#[tokio::test]
async fn joins_and_unpositioned_publications_are_at_most_once() {
    let o = Outbox::new(10);
    let h = group(DropPolicy::Newest, "h", true);
    let plain = group(DropPolicy::Newest, "p", false);
    let _ = o.push_droppable(frame(b'1', 10), &h, true);
    for (g, positioned) in [(&h, false), (&plain, true)] {
        let p = o.push_droppable(frame(b'x', 10), g, positioned);
        assert_eq!(p.result, PushResult::Dropped);
        assert!(!lost_of(&p)[0].2);
    }
    assert!(!h.is_stale() && !plain.is_stale());
    assert_eq!(written(&o).await, b"1");
}

#[tokio::test]
async fn the_writer_takes_everything_and_the_queue_is_free_again() {
    let o = Outbox::new(20);
    let a = group(DropPolicy::Newest, "a", false);
    let _ = o.push_droppable(frame(b'1', 10), &a, false);
    let _ = o.push(frame(b'R', 10));
    let mut v = Vec::new();
    assert!(matches!(o.next(&mut v).await, Outgoing::Frames { .. }));
    assert_eq!(v.len(), 2);
    assert_eq!(o.queued_bytes(), 0);
    // Room again for two frames; droppable bytes were reset with the rest.
    let _ = o.push_droppable(frame(b'2', 10), &a, false);
    assert_eq!(o.push(frame(b'S', 10)).result, PushResult::Queued);
    assert_eq!(o.push(frame(b'T', 10)).result, PushResult::Queued);
    assert_eq!(o.dropped(), 1);
    assert_eq!(written(&o).await, b"ST");
}

#[tokio::test]
async fn a_reply_larger_than_the_queue_goes_when_nothing_else_must() {
    let o = Outbox::new(20);
    let a = group(DropPolicy::Newest, "a", false);
    let _ = o.push_droppable(frame(b'1', 10), &a, false);
    // A recovery reply of 50 bytes: nothing that must be written waits, it is queued
    // (the droppable push in front stays).
    assert_eq!(o.push(frame(b'R', 50)).result, PushResult::Queued);
    assert_eq!(o.queued_bytes(), 60);
    // What follows meets the bound again.
    assert_eq!(
        o.push_droppable(frame(b'2', 1), &a, false).result,
        PushResult::Dropped
    );
    assert_eq!(o.push(frame(b'S', 1)).result, PushResult::Overflow);
    let o = Outbox::new(20);
    let _ = o.push(frame(b'R', 1));
    assert_eq!(o.push(frame(b'S', 50)).result, PushResult::Overflow);
}

#[tokio::test]
async fn positions_stay_right_after_drops_in_the_middle() {
    let o = Outbox::new(50);
    let g = group(DropPolicy::Oldest, "a", false);
    let _ = o.push(frame(b'R', 10));
    let _ = o.push_droppable(frame(b'1', 10), &g, false);
    let _ = o.push(frame(b'Q', 10));
    let _ = o.push_droppable(frame(b'2', 10), &g, false);
    let _ = o.push_droppable(frame(b'3', 10), &g, false);
    // 1 and 2 go from between frames that stay; 3 moves up.
    let p = o.push_droppable(frame(b'b', 20), &g, false);
    assert_eq!(lost_of(&p), [("a".to_string(), 2, false)]);
    // 3 is found where it now is.
    let p = o.push(frame(b'S', 10));
    assert_eq!(lost_of(&p), [("a".to_string(), 1, false)]);
    assert_eq!(o.queued_bytes(), 50);
    assert_eq!(written(&o).await, b"RQbS");

    let o = Outbox::new(30);
    let _ = o.push_droppable(frame(b'1', 10), &g, false);
    let _ = o.push(frame(b'R', 10));
    let _ = o.push_droppable(frame(b'2', 10), &g, false);
    // From the front, then from behind R, then what moved up.
    for name in [b'3', b'4'] {
        let p = o.push_droppable(frame(name, 10), &g, false);
        assert_eq!((p.result, lost_of(&p).len()), (PushResult::Queued, 1));
    }
    let p = o.push(frame(b'S', 10));
    assert_eq!(lost_of(&p), [("a".to_string(), 1, false)]);
    assert_eq!((o.queued_bytes(), o.dropped()), (30, 3));
    let mut v = Vec::new();
    assert!(matches!(o.next(&mut v).await, Outgoing::Frames { .. }));
    assert_eq!(v.iter().map(|f| f[0]).collect::<Vec<_>>(), b"R4S");
    // After a drain positions start again.
    let _ = o.push_droppable(frame(b'5', 20), &g, false);
    let _ = o.push(frame(b'T', 10));
    let p = o.push(frame(b'U', 10));
    assert_eq!(lost_of(&p), [("a".to_string(), 1, false)]);
    assert_eq!(written(&o).await, b"TU");
}
