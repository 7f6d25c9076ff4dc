//! Incremental detokenization and stop conditions, driven by forced (one-hot) logits.

mod common;

use std::sync::Arc;

use common::{EOS, VOCAB, id_counter, model, tokenizer, validated};
use sampling::detokenizer::IncrementalDetokenizer;
use sampling::{Finish, FinishReason, GroupDecoder, SamplingParams, Scratch, StopReason, TokenId};

struct Run {
    deltas: Vec<String>,
    text: String,
    finish: Option<Finish>,
    tokens: Vec<TokenId>,
}

/// Forces `tokens` one by one (greedy on one-hot logits) until the group finishes.
fn run_forced(params: SamplingParams, max_model_len: usize, tokens: &[TokenId]) -> Run {
    let params = SamplingParams {
        temperature: 0.0,
        ..params
    };
    let mut g = GroupDecoder::new(
        validated(params),
        Arc::from(&[0u32][..]),
        1,
        model(VOCAB, &[EOS], max_model_len),
        0,
    );
    let mut scratch = Scratch::default();
    let mut ids = id_counter(10);
    let mut deltas = Vec::new();
    for &t in tokens {
        if g.is_finished() {
            break;
        }
        let mut row = vec![0.0f32; VOCAB];
        row[t as usize] = 20.0;
        let step = g.step(&mut row, &mut scratch, &mut ids).unwrap();
        deltas.push(step.appends[0].text_delta.clone());
    }
    let out = g.outputs()[0];
    Run {
        deltas,
        text: out.text().to_owned(),
        finish: out.finish().cloned(),
        tokens: out.output_tokens().to_vec(),
    }
}

fn plain() -> SamplingParams {
    SamplingParams {
        max_tokens: Some(50),
        ..Default::default()
    }
}

#[test]
fn multibyte_characters_split_across_tokens_are_never_broken() {
    // " caf" [C3] [A9] [F0 9F] [98 80] "!"
    let tokens = [5, 6, 7, 8, 9, 4];
    let r = run_forced(
        SamplingParams {
            max_tokens: Some(6),
            ..plain()
        },
        100,
        &tokens,
    );
    assert_eq!(r.deltas, vec![" caf", "", "é", "", "😀", "!"]);
    assert_eq!(r.text, " café😀!");
    assert_eq!(r.text, tokenizer().decode(&tokens, true).unwrap());
    assert_eq!(r.finish, Some(Finish::Length));
}

#[test]
fn incremental_text_equals_full_decode_for_any_token_sequence() {
    let tok = tokenizer();
    // Every sequence of 4 tokens over a vocabulary mixing split characters and EOS.
    let alphabet: [TokenId; 6] = [1, 6, 7, 8, 9, EOS];
    for code in 0..alphabet.len().pow(4) {
        let seq: Vec<TokenId> = (0..4)
            .map(|i| alphabet[code / alphabet.len().pow(i) % alphabet.len()])
            .collect();
        let mut d = IncrementalDetokenizer::new(tok.clone(), &[0, 1], true);
        let mut text = String::new();
        for &t in &seq {
            text.push_str(&d.push(t).unwrap());
        }
        text.push_str(&d.flush().unwrap());
        assert_eq!(text, tok.decode(&seq, true).unwrap(), "{seq:?}");
    }
}

#[test]
fn length_finish_flushes_an_incomplete_character_like_a_full_decode() {
    let r = run_forced(
        SamplingParams {
            max_tokens: Some(2),
            ..plain()
        },
        100,
        &[5, 6],
    );
    assert_eq!(r.text, tokenizer().decode(&[5, 6], true).unwrap());
    assert_eq!(r.text, " caf\u{FFFD}");
    assert_eq!(r.deltas.concat(), r.text);
}

#[test]
fn stop_string_across_tokens_is_held_back_and_excluded() {
    let params = SamplingParams {
        stop: vec!["STOP".into()],
        ..plain()
    };
    let r = run_forced(params, 100, &[0, 2, 3, 4]);
    assert_eq!(r.deltas, vec!["Hello", " ", ""]);
    assert_eq!(r.text, "Hello ");
    assert_eq!(r.finish, Some(Finish::StopString("STOP".into())));
    assert_eq!(
        r.tokens,
        vec![0, 2, 3],
        "the token completing the stop string is kept"
    );
    let f = r.finish.unwrap();
    assert_eq!(f.reason(), FinishReason::Stop);
    assert_eq!(f.stop_reason(), Some(StopReason::Text("STOP".into())));
}

#[test]
fn include_stop_str_in_output_keeps_it_and_streams_without_hold_back() {
    let params = SamplingParams {
        stop: vec!["STOP".into()],
        include_stop_str_in_output: true,
        ..plain()
    };
    let r = run_forced(params, 100, &[0, 2, 3, 4]);
    assert_eq!(r.deltas, vec!["Hello", " ST", "OP"]);
    assert_eq!(r.text, "Hello STOP");
}

#[test]
fn stop_string_inside_a_token_truncates_the_rest() {
    let params = SamplingParams {
        stop: vec!["TO".into()],
        ..plain()
    };
    assert_eq!(run_forced(params.clone(), 100, &[0, 10]).text, "Hello S");
    let params = SamplingParams {
        include_stop_str_in_output: true,
        ..params
    };
    assert_eq!(run_forced(params, 100, &[0, 10]).text, "Hello STO");
}

#[test]
fn earliest_stop_string_wins() {
    let params = SamplingParams {
        stop: vec!["OP".into(), "ST".into()],
        ..plain()
    };
    let r = run_forced(params, 100, &[0, 10]);
    assert_eq!(r.text, "Hello ");
    assert_eq!(r.finish, Some(Finish::StopString("ST".into())));
}

#[test]
fn a_false_start_of_a_stop_string_is_released() {
    let params = SamplingParams {
        stop: vec!["STOP".into()],
        max_tokens: Some(3),
        ..plain()
    };
    let r = run_forced(params, 100, &[0, 2, 11]);
    assert_eq!(r.deltas, vec!["Hello", " ", "ST more"]);
    assert_eq!(r.text, "Hello ST more");
}

#[test]
fn eos_and_stop_tokens() {
    let r = run_forced(plain(), 100, &[0, EOS]);
    assert_eq!(
        (r.text.as_str(), r.finish.clone()),
        ("Hello", Some(Finish::Eos(EOS)))
    );
    assert_eq!(r.finish.unwrap().stop_reason(), None);

    let params = SamplingParams {
        stop_token_ids: vec![4],
        ..plain()
    };
    let r = run_forced(params.clone(), 100, &[0, 4, 1]);
    assert_eq!(
        (r.text.as_str(), r.tokens.as_slice()),
        ("Hello", &[0, 4][..])
    );
    assert_eq!(r.finish.unwrap().stop_reason(), Some(StopReason::Token(4)));
    let r = run_forced(
        SamplingParams {
            include_stop_str_in_output: true,
            ..params
        },
        100,
        &[0, 4],
    );
    assert_eq!(r.text, "Hello!");

    // Several EOS ids: any of them stops.
    let mut g = GroupDecoder::new(
        validated(SamplingParams {
            temperature: 0.0,
            ..plain()
        }),
        Arc::from(&[0u32][..]),
        1,
        model(VOCAB, &[EOS, 13], 100),
        0,
    );
    let mut row = vec![0.0f32; VOCAB];
    row[13] = 5.0;
    let step = g
        .step(&mut row, &mut Scratch::default(), &mut id_counter(5))
        .unwrap();
    assert_eq!(step.finished[0].finish, Finish::Eos(13));
    assert!(step.group_finished);
}

#[test]
fn max_model_len_caps_the_sequence() {
    // Prompt of 1 token, max_model_len 4: three generated tokens at most.
    let r = run_forced(plain(), 4, &[12, 12, 12, 12, 12]);
    assert_eq!(r.tokens.len(), 3);
    assert_eq!(r.finish.unwrap().reason(), FinishReason::Length);
}

#[test]
fn streamed_deltas_always_concatenate_to_the_final_text() {
    let stops = [
        vec![],
        vec!["STOP".to_string()],
        vec!["é".to_string(), "OP!".to_string()],
    ];
    let seqs: [&[TokenId]; 4] = [
        &[0, 2, 3, 4, 1],
        &[5, 6, 7, 4, 2],
        &[8, 9, 2, 3, 11],
        &[2, 3, 4, 10, 4],
    ];
    for stop in &stops {
        for include in [false, true] {
            for seq in seqs {
                let params = SamplingParams {
                    stop: stop.clone(),
                    include_stop_str_in_output: include,
                    max_tokens: Some(5),
                    ..plain()
                };
                let r = run_forced(params, 100, seq);
                assert_eq!(r.deltas.concat(), r.text, "{stop:?} {include} {seq:?}");
            }
        }
    }
}
