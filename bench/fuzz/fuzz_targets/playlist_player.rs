//! Arbitrary server answers into bitriver-load's playlist parser and LL-HLS player: a load
//! generator reads whatever the server under test sends, so nothing may panic, the player never
//! has more than one request per lane in flight, and every request it makes is an absolute URL
//! with a host (the driver sends them all to the target's address).
#![no_main]

#[allow(dead_code)]
#[path = "../../src/load/player.rs"]
mod player;
#[allow(dead_code)]
#[path = "../../src/load/playlist.rs"]
mod playlist;

use libfuzzer_sys::fuzz_target;
use player::{Answer, Clock, Lane, Player};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = playlist::parse_multivariant(&text);
    let _ = playlist::parse_media(&text);
    // Answers separated by a NUL: each one goes to the next request the player makes.
    let mut answers = text.split('\0');
    let master = url::Url::parse("http://origin.test/hls/ch/master.m3u8").unwrap();
    let mut p = Player::new(master, 3_000_000);
    let mut now = 0.0;
    for step in 0..64 {
        let clock = Clock { mono_ms: now, wall_ms: 1.7e12 + now };
        let requests = p.poll(clock);
        let lanes: Vec<Lane> = requests.iter().map(|r| r.lane).collect();
        assert!(lanes.len() <= 2 && !(lanes.len() == 2 && lanes[0] == lanes[1]), "{requests:?}");
        for r in &requests {
            assert!(r.url.host_str().is_some(), "{}", r.url);
        }
        for r in requests {
            let answer = answers.next();
            let reply = match (r.lane, answer) {
                (_, None) => Answer::Failed("no more input"),
                (Lane::Playlist, Some(body)) => Answer::Ok { body: body.as_bytes(), bytes: body.len() as u64 },
                (Lane::Media, Some(body)) if body.len() % 5 == 1 => Answer::Status(404),
                (Lane::Media, Some(body)) => Answer::Ok { body: &[], bytes: body.len() as u64 },
            };
            p.on_response(r.lane, reply, clock);
        }
        let _ = p.sample(clock);
        now += f64::from(step % 7) * 37.0;
    }
    let stats = p.final_stats(Clock { mono_ms: now, wall_ms: 1.7e12 + now });
    assert!(stats.stall_ms >= 0.0 && stats.stall_ms.is_finite());
});
