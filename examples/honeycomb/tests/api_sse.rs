//! Event streams over real HTTP: resume from `Last-Event-ID` (header or
//! query) with nothing missed or repeated while events keep arriving, a
//! final `end` event, 1,000 concurrent subscribers, workflow and feed
//! streams, the per-token cap, and streams ending at shutdown.

mod common;

use std::time::Duration;

use common::{Server, SseReader, problem};
use hive::iam::TokenKind;
use honeycomb::api::ApiLimits;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A leased, started task; the worker token and the lease token.
async fn running(s: &Server, t: &str) -> (String, String, Value) {
    let id = s.submit(t, "echo").await;
    let (_, worker) = s.node(t, 4).await;
    let claim: Value = s
        .post("/api/worker/claim", &worker, json!({"start": true}))
        .await
        .json()
        .await
        .unwrap();
    let token = claim["tasks"][0]["token"].clone();
    (id, worker, token)
}

async fn log(s: &Server, worker: &str, token: &Value, line: String) {
    let r: Value = s
        .post(
            "/api/worker/log",
            worker,
            json!({"lines": [{"token": token, "stream": "stdout", "line": line}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(r["results"][0]["ack"].is_object(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_last_event_id_misses_and_repeats_nothing_while_events_arrive() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let (id, worker, token) = running(&s, &t).await;
    let path = format!("/api/tasks/{id}/events");

    // A writer keeps logging while readers come and go.
    let writer = {
        let http = s.http.clone();
        let url = s.url("/api/worker/log");
        let worker = worker.clone();
        let token = token.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let body = json!({"lines": [{"token": token, "stream": "stdout", "line": format!("l{i}")}]});
                let r = http
                    .post(&url)
                    .bearer_auth(&worker)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let body = json!({"reports": [{"token": token, "outcome": "success", "output": 1}]});
            let url = url.replace("/log", "/report");
            let r = http
                .post(&url)
                .bearer_auth(&worker)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        })
    };

    // Read a few events, drop the connection, resume with the header, then
    // with the query parameter, until the task ends.
    let mut seen: Vec<u64> = Vec::new();
    let mut last: Option<u64> = None;
    let mut round = 0;
    let finished = loop {
        let mut req = s.req(Method::GET, &path, Some(&t));
        if let Some(l) = last {
            req = if round % 2 == 0 {
                req.header("Last-Event-ID", l.to_string())
            } else {
                s.req(Method::GET, &format!("{path}?last_event_id={l}"), Some(&t))
            };
        }
        round += 1;
        let mut reader = SseReader::new(req.send().await.unwrap());
        let mut ended = false;
        for _ in 0..25 {
            match reader.next().await {
                Some(e) if e.event.as_deref() == Some("end") => {
                    ended = true;
                    break;
                }
                Some(e) => {
                    let seq: u64 = e.id.as_deref().unwrap().parse().unwrap();
                    assert_eq!(e.json()["seq"], seq);
                    seen.push(seq);
                    last = Some(seq);
                }
                None => break,
            }
        }
        if ended {
            break true;
        }
        assert!(round < 200, "the stream never ended");
    };
    assert!(finished);
    writer.await.unwrap();
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, expected, "every seq exactly once, in order");
    let task = s
        .hive
        .store()
        .get_task(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*seen.last().unwrap(), task.last_seq);
    assert!(round > 3, "the test resumed several times");

    // A resume after the terminal event gets just `end`.
    let r = s
        .req(Method::GET, &path, Some(&t))
        .header("Last-Event-ID", task.last_seq.to_string())
        .send()
        .await
        .unwrap();
    let events = SseReader::new(r).until_end().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.as_deref(), Some("end"));
    problem(
        s.req(Method::GET, &path, Some(&t))
            .header("Last-Event-ID", "yesterday")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_each_receive_every_event() {
    let s = Server::with_limits(ApiLimits {
        streams_per_token: 2000,
        ..ApiLimits::default()
    })
    .await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let (id, worker, token) = running(&s, &t).await;
    let path = format!("/api/tasks/{id}/events");
    let mut readers = Vec::new();
    for _ in 0..1000 {
        let http = s.http.clone();
        let url = s.url(&path);
        let t = t.clone();
        readers.push(tokio::spawn(async move {
            let r = http.get(url).bearer_auth(t).send().await.unwrap();
            let events = SseReader::new(r).until_end().await;
            events
                .iter()
                .filter(|e| e.event.is_none())
                .map(|e| e.id.clone().unwrap().parse::<u64>().unwrap())
                .collect::<Vec<u64>>()
        }));
    }
    // Wait until every stream is open, then write.
    for _ in 0..600 {
        if s.state.open_streams() == 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.state.open_streams(), 1000);
    for i in 0..20 {
        log(&s, &worker, &token, format!("line {i}")).await;
    }
    s.post(
        "/api/worker/report",
        &worker,
        json!({"reports": [{"token": token, "outcome": "success", "output": {}}]}),
    )
    .await;
    let last = s
        .hive
        .store()
        .get_task(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .last_seq;
    let expected: Vec<u64> = (1..=last).collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), expected);
    }
    for _ in 0..100 {
        if s.state.open_streams() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.state.open_streams(), 0, "ended streams free their slots");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_follow_workflow_and_feed_streams() {
    let s = Server::start().await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let (id, worker, token) = running(&s, &t).await;
    let follow = s
        .get(&format!("/api/tasks/{id}/logs?follow=true"), &t)
        .await;
    let mut follow = SseReader::new(follow);
    log(&s, &worker, &token, "hello".into()).await;
    let e = follow.next().await.unwrap();
    assert_eq!(e.json()["line"], "hello");
    assert_eq!(e.json()["attempt"], 1);
    s.post(
        "/api/worker/report",
        &worker,
        json!({"reports": [{"token": token, "outcome": "success", "output": {}}]}),
    )
    .await;
    let rest = follow.until_end().await;
    assert_eq!(rest.last().unwrap().event.as_deref(), Some("end"));
    assert_eq!(rest[0].json()["terminal"], true);

    // The feed: every event of the tenant, `id:` = cursor, resumable.
    let mut feed = SseReader::new(s.get("/api/feed/events", &t).await);
    let first = feed.next().await.unwrap();
    assert_eq!(first.id.as_deref(), Some("1"));
    assert_eq!(first.json()["event"]["type"], "queued");
    let second = feed.next().await.unwrap();
    drop(feed);
    let r = s
        .req(Method::GET, "/api/feed/events", Some(&t))
        .header("Last-Event-ID", second.id.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut feed = SseReader::new(r);
    let third = feed.next().await.unwrap();
    assert_eq!(third.id.as_deref(), Some("3"));

    // A workflow's stream ends with `end` after `finished`.
    let r = s
        .post(
            "/api/workflows",
            &t,
            json!({"name": "wf", "steps": [{"id": "a", "agent": "wf-a", "input": {}}]}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let wf: Value = s
        .post(
            "/api/workflows",
            &t,
            json!({"name": "wf2", "steps": [{"id": "a", "agent": "wf-b", "input": {}}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let wid = wf["id"].as_str().unwrap();
    let mut events = SseReader::new(s.get(&format!("/api/workflows/{wid}/events"), &t).await);
    let started = events.next().await.unwrap();
    assert_eq!(started.id.as_deref(), Some("1"));
    let r = s
        .post(&format!("/api/workflows/{wid}/cancel"), &t, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let rest = events.until_end().await;
    assert_eq!(rest.last().unwrap().event.as_deref(), Some("end"));
    let r = s
        .post(&format!("/api/workflows/{wid}/cancel"), &t, json!({}))
        .await;
    problem(r, StatusCode::CONFLICT, "conflict").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_token_are_capped_and_end_at_shutdown() {
    let s = Server::with_limits(ApiLimits {
        streams_per_token: 2,
        ..ApiLimits::default()
    })
    .await;
    let t = s.token("acme", "alice", TokenKind::User).await;
    let other = s.token("acme", "bob", TokenKind::User).await;
    let id = s.submit(&t, "echo").await;
    let path = format!("/api/tasks/{id}/events");
    let mut a = SseReader::new(s.get(&path, &t).await);
    let _b = SseReader::new(s.get(&path, &t).await);
    let r = s.get(&path, &t).await;
    let p = problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(p["retry_after"], 1);
    // Another token has its own slots.
    let _c = SseReader::new(s.get("/api/feed/events", &other).await);
    assert_eq!(a.next().await.unwrap().id.as_deref(), Some("1"));
    // Shutdown ends the open streams.
    s.stop.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), a.next()).await;
    assert!(matches!(end, Ok(None)), "the stream closed at shutdown");
    s.stop().await;
}
