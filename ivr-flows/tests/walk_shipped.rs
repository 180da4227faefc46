//! Walks every shipped flow through every branch with the interpreter alone.

mod common;

use common::{Call, WORKDAY_10AM, shipped};
use ivr_flows::calendar::{Date, LocalTime};
use ivr_flows::model::{Lang, StepKind, TransferTarget};
use ivr_flows::{Action, Event, InputError, PlayItem, Session, damm};

fn valid_order() -> String {
    let base = "2611230100042";
    format!("{base}{}", damm::check_digit(base).expect("digits"))
}

fn submitted(c: &Call) -> std::collections::BTreeMap<String, String> {
    c.find(|a| {
        if let Action::SubmitOrder { slots } = a {
            Some(slots.clone())
        } else {
            None
        }
    })
    .expect("an order was submitted")
}

fn transfer(c: &Call) -> (TransferTarget, std::collections::BTreeMap<String, String>) {
    c.find(|a| {
        if let Action::Transfer {
            target, context, ..
        } = a
        {
            Some((target.clone(), context.clone()))
        } else {
            None
        }
    })
    .expect("a transfer")
}

#[test]
fn greeting_carries_the_emergency_notice_and_cannot_be_skipped() {
    let mut c = Call::main();
    assert!(
        c.heard()
            .contains("如遇紧急情况，请挂机拨打110、119、120或122")
    );
    c.barge("1");
    assert!(
        c.last
            .iter()
            .any(|a| matches!(a, Action::Trace(t) if t.contains("ignored"))),
        "greeting has no barge-in"
    );
    assert!(!c.last.iter().any(|a| matches!(a, Action::StopPlayback)));
    c.settle();
    assert!(c.last_play_text().contains("For English"));
}

#[test]
fn report_a_problem_end_to_end() {
    let mut c = Call::main();
    c.press("1"); // Mandarin
    c.press("1"); // report
    c.say("小区门口施工噪音很大");
    assert!(
        c.last_play_text()
            .contains("您说的是：小区门口施工噪音很大")
    );
    c.press("1"); // confirm
    c.say("在洪山区"); // district by speech
    c.press("1"); // noise
    assert!(c.last_play_text().contains("您反映的是洪山区的问题"));
    c.press("1"); // submit
    let slots = submitted(&c);
    assert_eq!(slots["kind"], "noise");
    assert_eq!(slots["district"], "洪山区");
    assert_eq!(slots["text"], "小区门口施工噪音很大");
    assert_eq!(slots["caller"], "13912345678");
    let order = valid_order();
    c.send(Event::SubmitResult {
        order_id: order.clone(),
    });
    // The order number is read from per-language digit clips in groups of four.
    let clips: Vec<String> = c
        .last
        .iter()
        .find_map(|a| {
            if let Action::Play { items, .. } = a {
                Some(items.clone())
            } else {
                None
            }
        })
        .expect("order number played")
        .into_iter()
        .filter_map(|i| {
            if let ivr_flows::PlayItem::Audio { path, .. } = i {
                Some(path)
            } else {
                None
            }
        })
        .filter(|p| p.contains("/digits/"))
        .collect();
    assert_eq!(clips.len(), 14);
    assert_eq!(clips[0], "prompts/zh/digits/2.wav");
    c.settle();
    assert!(c.last_play_text().contains("还需要其他服务"));
    c.press("2");
    assert_eq!(c.hung_up().as_deref(), Some("completed"));
    assert!(c.s.is_ended());
}

#[test]
fn district_two_digit_keys_wait_for_the_inter_digit_timer() {
    let mut c = Call::main();
    c.press("1");
    c.press("1");
    c.say("路灯坏了");
    c.press("1");
    c.press("1"); // could be 1, 10, 11, 12, 13
    let timer = c.last.iter().find_map(|a| {
        if let Action::StartTimer { after_ms, .. } = a {
            Some(*after_ms)
        } else {
            None
        }
    });
    assert_eq!(timer, Some(2000));
    c.press("2");
    c.press("5");
    c.press("1");
    assert_eq!(submitted(&c)["district"], "黄陂区");
    assert_eq!(submitted(&c)["kind"], "other");

    let mut c = Call::main();
    c.press("1");
    c.press("1");
    c.say("路灯坏了");
    c.press("1");
    c.press("1");
    c.wait(); // inter-digit timeout: "1" alone is 江岸区
    c.press("2");
    c.press("1");
    assert_eq!(submitted(&c)["district"], "江岸区");
    assert_eq!(submitted(&c)["kind"], "traffic");
}

#[test]
fn report_retry_confirmation_restart_and_failures() {
    let mut c = Call::main();
    c.press("1");
    c.press("1");
    c.say("嗯");
    c.press("2"); // retry the description
    assert!(
        c.last_play_text().contains("请说出您要反映的问题"),
        "short re-prompt"
    );
    c.send(Event::SpeechStarted);
    c.send(Event::SpeechResult {
        text: "含糊".into(),
        confidence: 0.1,
        alternatives: vec![],
    });
    assert!(c.last_play_text().contains("抱歉，没有听清"));
    c.say("垃圾没人清理");
    c.press("1");
    c.press("3");
    c.press("3");
    c.press("2"); // restart at review
    assert!(c.last_play_text().contains("请在提示音后说出"));
    c.say("垃圾没人清理");
    c.press("1");
    c.press("3");
    c.press("3");
    c.press("1");
    assert_eq!(submitted(&c)["kind"], "cityscape");
    c.send(Event::SubmitFailed {
        reason: "backend down".into(),
    });
    c.settle();
    let (target, ctx) = transfer(&c);
    assert_eq!(target, TransferTarget::Queue("general".into()));
    assert_eq!(ctx["description"], "垃圾没人清理");
    assert_eq!(ctx["district"], "硚口区");
    c.send(Event::TransferFailed {
        reason: "no agents".into(),
    });
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("agents_busy"));
}

#[test]
fn report_gives_up_after_three_silences() {
    let mut c = Call::main();
    c.press("1");
    c.press("1");
    for _ in 0..3 {
        c.wait();
    }
    assert!(c.heard().contains("没有听到您的声音"));
    let (target, _) = transfer(&c);
    assert_eq!(target, TransferTarget::Queue("general".into()));
}

#[test]
fn progress_rejects_bad_check_digit_and_reads_status_in_english() {
    let mut c = Call::main();
    c.press("2");
    c.press("2");
    assert!(c.last_play_text().contains("Enter your order number"));
    let good = valid_order();
    let mut bad = good.clone();
    bad.pop();
    bad.push(if good.ends_with('0') { '1' } else { '0' });
    c.press(&format!("{bad}#"));
    assert!(c.last_play_text().contains("not valid"));
    c.press(&format!("123*{good}#")); // * clears the first three keys
    let looked = c.find(|a| {
        if let Action::LookupOrder { order_id } = a {
            Some(order_id.clone())
        } else {
            None
        }
    });
    assert_eq!(looked, Some(good.clone()));
    c.send(Event::LookupResult {
        status: "in progress".into(),
    });
    c.settle();
    assert!(c.heard().contains("status: in progress."));
    assert!(c.log.iter().any(|a| matches!(
        a,
        Action::Play {
            language: Lang::En,
            ..
        }
    )));
    c.press("1"); // anything else -> main menu
    c.press("3");
    c.settle();
    assert_eq!(transfer(&c).0, TransferTarget::Queue("policy".into()));
}

#[test]
fn progress_not_found_short_input_and_give_up() {
    let mut c = Call::main();
    c.press("1");
    c.press("2");
    c.press(&format!("{}#", valid_order()));
    c.send(Event::LookupFailed {
        reason: "not found".into(),
    });
    c.settle();
    assert!(c.heard().contains("没有查到这个工单"));

    let mut c = Call::main();
    c.press("1");
    c.press("2");
    c.press("123#");
    c.press("0#"); // 0 is a digit here, not the agent key
    c.press("456#");
    assert!(c.heard().matches("工单号有误").count() >= 2);
    let (target, ctx) = transfer(&c);
    assert_eq!(target, TransferTarget::Queue("general".into()));
    assert!(ctx.contains_key("caller"));
}

#[test]
fn policy_and_enterprise_queues_and_busy_voicemail() {
    let mut c = Call::main();
    c.press("1");
    c.press("4");
    c.settle();
    assert_eq!(transfer(&c).0, TransferTarget::Queue("enterprise".into()));
    c.send(Event::TransferFailed {
        reason: "busy".into(),
    });
    c.settle();
    assert!(c.heard().contains("坐席全忙，请您留言"));
    assert!(
        c.find(|a| if let Action::Record { max_seconds, beep } = a {
            Some((*max_seconds, *beep))
        } else {
            None
        }) == Some((120, true))
    );
    c.send(Event::RecordingFinished {
        uri: "file:///r.wav".into(),
        duration_ms: 9000,
        transcript: Some("楼道灯坏了".into()),
    });
    let slots = submitted(&c);
    assert!(
        !slots.contains_key("kind"),
        "the order's kind is for normalization to find"
    );
    assert_eq!(slots["text"], "楼道灯坏了");
    assert_eq!(slots["recording"], "file:///r.wav");
    c.send(Event::SubmitResult {
        order_id: valid_order(),
    });
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("completed"));
}

#[test]
fn zero_and_spoken_agent_work_everywhere() {
    let mut c = Call::main();
    c.press("1");
    c.press("0");
    c.settle();
    assert_eq!(transfer(&c).0, TransferTarget::Queue("general".into()));

    let mut c = Call::main();
    c.press("1");
    c.say("我要转人工");
    c.settle();
    assert!(c.heard().contains("正在为您转接人工服务"));

    // In the report sub-flow the agent gets the slots collected so far.
    let mut c = Call::main();
    c.press("1");
    c.press("1");
    c.say("人工");
    c.settle();
    assert_eq!(transfer(&c).0, TransferTarget::Queue("general".into()));
}

#[test]
fn a_caller_waiting_for_an_agent_may_ask_for_a_callback() {
    // The agent, policy and enterprise queues all offer key 1.
    let set = shipped();
    let main = set.flow("main").expect("main");
    for step in ["agent", "policy", "enterprise"] {
        match main.step(step).map(|s| &s.kind) {
            Some(StepKind::Transfer {
                callback: Some(cb),
                while_waiting,
                ..
            }) => {
                assert_eq!(cb.key, '1', "{step}");
                assert!(while_waiting.iter().all(|(k, _)| *k != '1'), "{step}");
            }
            other => panic!("{step} offers no callback: {other:?}"),
        }
    }

    let mut c = Call::main();
    c.press("1");
    c.press("0");
    c.settle();
    assert_eq!(transfer(&c).0, TransferTarget::Queue("general".into()));
    c.send(Event::Digit('1'));
    assert!(c.last.contains(&Action::QueueCallback), "{:?}", c.last);
    c.send(Event::CallbackQueued);
    let items = c
        .find(|a| match a {
            Action::Play { items, .. } => Some(items.clone()),
            _ => None,
        })
        .expect("the confirmation");
    assert!(
        matches!(&items[..], [PlayItem::Audio { path, text }]
            if path == "prompts/zh/callback_queued.wav" && text.contains("保留排队位置")),
        "{items:?}"
    );
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("callback_queued"));

    // In English, from the enterprise line; a refusal keeps the caller in line.
    let mut c = Call::main();
    c.press("2");
    c.press("4");
    c.settle();
    assert_eq!(transfer(&c).0, TransferTarget::Queue("enterprise".into()));
    c.send(Event::Digit('1'));
    c.send(Event::CallbackRefused {
        reason: "no callbacks now".into(),
    });
    assert!(!c.s.is_ended());
    c.send(Event::Digit('1'));
    c.send(Event::CallbackQueued);
    c.settle();
    assert!(
        c.last_play_text()
            .contains("We will keep your place in line"),
        "{}",
        c.heard()
    );
    assert_eq!(c.hung_up().as_deref(), Some("callback_queued"));
}

#[test]
fn star_repeats_and_nine_slows_speech() {
    let mut c = Call::main();
    c.press("1");
    let before = c.heard().matches("反映问题请按1").count();
    c.press("*");
    assert_eq!(c.heard().matches("反映问题请按1").count(), before + 1);
    c.press("9");
    let rate = c.find(|a| {
        if let Action::Play { rate, .. } = a {
            Some(*rate)
        } else {
            None
        }
    });
    assert_eq!(rate, Some(0.8));
}

#[test]
fn main_menu_no_input_and_no_match_then_agent() {
    let mut c = Call::main();
    c.press("1");
    c.wait();
    assert!(
        c.last_play_text()
            .starts_with("没有听到您的选择。请按1到4选择服务")
    );
    c.press("7");
    assert!(c.last_play_text().starts_with("抱歉，没有这个选项。"));
    c.wait();
    c.settle();
    assert!(
        c.find(|a| matches!(a, Action::Transfer { .. }).then_some(()))
            .is_none(),
        "two no-inputs are not three"
    );
    c.wait();
    c.settle();
    assert_eq!(transfer(&c).0, TransferTarget::Queue("general".into()));
}

#[test]
fn no_input_timer_never_fires_mid_utterance() {
    let mut c = Call::main();
    c.press("1");
    c.settle();
    let timer = c.running_timer().expect("no-input timer after the prompt");
    let out = c.send(Event::SpeechStarted);
    assert!(out.contains(&Action::CancelTimer { id: timer }));
    // A late fire of the cancelled timer is ignored.
    let out = c.send(Event::TimerFired { id: timer });
    assert!(out.iter().all(|a| matches!(a, Action::Trace(_))));
    c.send(Event::SpeechResult {
        text: "查询进度".into(),
        confidence: 0.8,
        alternatives: vec![],
    });
    assert!(c.last_play_text().contains("请输入工单号"));
}

#[test]
fn barge_in_stops_the_menu_prompt_and_type_ahead_works() {
    let mut c = Call::main();
    c.settle_one(); // the greeting
    // choose_language allows DTMF barge-in: key 1 stops it at once.
    let out = c.send(Event::Digit('1'));
    assert_eq!(out.first(), Some(&Action::StopPlayback));
    // Speech barge-in stops the main menu prompt too.
    let out = c.send(Event::SpeechStarted);
    assert!(out.contains(&Action::StopPlayback));
    c.send(Event::SpeechResult {
        text: "政策咨询".into(),
        confidence: 0.9,
        alternatives: vec![],
    });
    c.settle();
    assert_eq!(transfer(&c).0, TransferTarget::Queue("policy".into()));

    // A key pressed during the status announcement skips it and answers the next menu.
    let mut c = Call::main();
    c.press("1");
    c.press("2");
    c.press(&format!("{}#", valid_order()));
    c.send(Event::LookupResult {
        status: "已办结".into(),
    });
    assert!(c.last_play_text().contains("已办结"));
    let out = c.send(Event::Digit('2'));
    assert_eq!(out.first(), Some(&Action::StopPlayback));
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("completed"));
    assert!(c.heard().contains("还需要其他服务"));
}

#[test]
fn after_hours_holidays_and_makeup_workdays() {
    let at = |y, m, d, h| LocalTime {
        date: Date {
            year: y,
            month: m,
            day: d,
        },
        hour: h,
        minute: 0,
    };
    for (time, closed) in [
        (at(2026, 11, 23, 20), true),
        (at(2026, 10, 1, 10), true),
        (at(2026, 11, 22, 10), true),
        (at(2026, 10, 10, 10), false),
        (WORKDAY_10AM, false),
    ] {
        let mut c = Call::start(shipped(), "main", time);
        c.press("1");
        c.settle();
        assert_eq!(c.heard().contains("现在是非工作时间"), closed, "{time:?}");
        if closed {
            assert!(c.log.iter().any(|a| matches!(a, Action::Record { .. })));
            c.send(Event::RecordingFinished {
                uri: "u".into(),
                duration_ms: 1,
                transcript: None,
            });
            c.send(Event::SubmitFailed { reason: "x".into() });
            c.settle();
            assert_eq!(c.hung_up().as_deref(), Some("submit_failed"));
        }
    }
}

#[test]
fn language_menu_defaults_to_mandarin_after_silence() {
    let mut c = Call::main();
    c.wait();
    c.wait();
    c.settle();
    assert!(c.last_play_text().contains("反映问题请按1"));
}

/// The survey call-back about order `order`.
fn survey(order: &str) -> Call {
    let inputs = [("order_id".to_string(), order.to_string())].into();
    let s = Session::with_inputs(shipped(), "survey", &inputs).expect("the survey takes order_id");
    Call::with_session(s, WORKDAY_10AM)
}

#[test]
fn survey_scores_one_to_five() {
    for (input, score) in [("5", "5"), ("4", "4"), ("3", "3"), ("2", "2"), ("1", "1")] {
        let mut c = survey(&valid_order());
        c.press(input);
        let slots = submitted(&c);
        assert_eq!(
            (
                slots["kind"].as_str(),
                slots["text"].as_str(),
                slots["order_id"].as_str()
            ),
            ("survey", score, valid_order().as_str()),
            "the answer is filed with the order it is about"
        );
        c.send(Event::SubmitResult {
            order_id: valid_order(),
        });
        c.settle();
        assert_eq!(c.hung_up().as_deref(), Some("completed"));
    }
    let mut c = survey(&valid_order());
    c.say("不满意");
    assert_eq!(submitted(&c)["text"], "2", "longest keyword wins");
    c.send(Event::SubmitFailed { reason: "x".into() });
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("completed"));

    let mut c = survey(&valid_order());
    c.wait();
    c.wait();
    c.settle();
    assert_eq!(c.hung_up().as_deref(), Some("no_score"));
}

#[test]
fn the_survey_needs_the_order_it_is_about() {
    let set = shipped();
    assert_eq!(
        set.flow("survey").map(|f| f.inputs.clone()),
        Some(vec!["order_id".to_string()])
    );
    assert_eq!(
        set.check_inputs("survey", &Default::default()),
        Err(InputError::Missing("order_id".into()))
    );
    // Started without it (as an inbound call would be), the survey still runs and says why
    // its answer names no order.
    let mut c = Call::start(shipped(), "survey", WORKDAY_10AM);
    assert!(
        c.log
            .iter()
            .any(|a| matches!(a, Action::Trace(t) if t.contains("without its inputs order_id"))),
        "{:?}",
        c.log
    );
    c.press("5");
    assert_eq!(submitted(&c)["order_id"], "");
}

/// The call-back of a missed call whose callback order is `order`.
fn callback(order: &str) -> Call {
    let inputs = [("order_id".to_string(), order.to_string())].into();
    let s = Session::with_inputs(shipped(), "callback", &inputs).expect("callback takes order_id");
    Call::with_session(s, WORKDAY_10AM)
}

#[test]
fn a_missed_caller_called_back_hears_why_and_may_report_reach_an_agent_or_leave() {
    let mut c = callback(&valid_order());
    c.settle();
    assert!(c.heard().contains("您刚才的来电没有接通"), "{}", c.heard());
    c.press("1");
    assert_eq!(
        c.s.position().map(|(flow, _)| flow.to_owned()).as_deref(),
        Some("report"),
        "key 1 goes to the report flow"
    );

    let mut c = callback(&valid_order());
    c.settle();
    c.press("0");
    let transfer = c.find(|a| match a {
        Action::Transfer { target, .. } => Some(format!("{target:?}")),
        _ => None,
    });
    assert!(
        transfer.is_some_and(|t| t.contains("general")),
        "key 0 reaches an agent"
    );

    let mut c = callback(&valid_order());
    c.settle();
    c.wait();
    c.wait();
    c.settle();
    assert_eq!(
        c.hung_up().as_deref(),
        Some("called_back"),
        "no answer: let go politely"
    );
}

#[test]
fn a_queue_callback_says_why_then_rejoins_the_queue() {
    let mut c = Call::start(shipped(), "queue_callback", WORKDAY_10AM);
    c.settle();
    assert!(c.heard().contains("您排队时选择了回电"), "{}", c.heard());
    let (target, _) = transfer(&c);
    assert_eq!(target, TransferTarget::Queue("general".into()));
}

#[test]
fn hangup_ends_the_session_and_later_events_do_nothing() {
    let mut c = Call::main();
    c.press("1");
    c.send(Event::HangUp);
    assert!(c.s.is_ended());
    assert!(c.send(Event::Digit('1')).is_empty());
}

#[test]
fn a_whole_call_takes_microseconds() {
    let set = shipped();
    let start = std::time::Instant::now();
    for _ in 0..100 {
        let mut c = Call::start(set.clone(), "main", WORKDAY_10AM);
        c.press("1");
        c.press("2");
        c.press(&format!("{}#", valid_order()));
        c.send(Event::LookupResult {
            status: "done".into(),
        });
        c.press("2");
        assert!(c.s.is_ended());
    }
    // Generous bound for debug builds on a shared machine: 100 calls well under a second.
    assert!(start.elapsed().as_millis() < 1000, "{:?}", start.elapsed());
}
