//! Beam search: a hand-worked Hugging Face example, a literal transcription of HF's
//! `BeamSearchScorer` on random logits tables, an exhaustive brute force, and the fork/free
//! protocol checked against a simulated scheduler.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::{id_counter, model, toy_logits, validated};
use sampling::{
    EarlyStopping, Finish, GroupDecoder, GroupStep, SamplingParams, Scratch, SeqId, TokenId,
};

type LogitsFn<'a> = &'a dyn Fn(&[TokenId]) -> Vec<f32>;

struct BeamRun {
    /// (output tokens, beam score), best first.
    outputs: Vec<(Vec<TokenId>, f64)>,
    steps: Vec<GroupStep>,
}

fn beam_params(width: i64, n: i64, max_tokens: i64, lp: f64, es: EarlyStopping) -> SamplingParams {
    SamplingParams {
        use_beam_search: true,
        best_of: Some(width),
        n,
        temperature: 0.0,
        max_tokens: Some(max_tokens),
        length_penalty: lp,
        early_stopping: es,
        ..Default::default()
    }
}

fn score(prompt_len: usize, out: &[TokenId], cum: f64, eos: TokenId, lp: f64) -> f64 {
    let len = prompt_len + out.len() - usize::from(out.last() == Some(&eos));
    cum / (len as f64).powf(lp)
}

/// Runs the crate's beam search, applying every step to a simulated scheduler that checks the
/// fork/free protocol (forks from live parents, frees of live sequences, running == live).
fn run_beam(
    params: SamplingParams,
    prompt: &[TokenId],
    vocab: usize,
    eos: TokenId,
    logits: LogitsFn<'_>,
) -> BeamRun {
    let lp = params.length_penalty;
    let mut g = GroupDecoder::new(
        validated(params),
        Arc::from(prompt),
        0,
        model(vocab, &[eos], 10_000),
        0,
    );
    let mut live: HashSet<SeqId> = HashSet::from([0]);
    let mut tokens: HashMap<SeqId, Vec<TokenId>> = HashMap::from([(0, Vec::new())]);
    let mut scratch = Scratch::default();
    let mut ids = id_counter(1);
    let mut steps = Vec::new();
    while !g.is_finished() {
        let mut rows: Vec<f32> = g
            .running_ids()
            .iter()
            .flat_map(|id| logits(&[prompt, &tokens[id]].concat()))
            .collect();
        let step = g.step(&mut rows, &mut scratch, &mut ids).unwrap();
        for f in &step.forks {
            assert!(live.contains(&f.parent), "fork from a dead parent {f:?}");
            assert!(live.insert(f.child), "child id reused {f:?}");
            let parent_tokens = tokens[&f.parent].clone();
            tokens.insert(f.child, parent_tokens);
        }
        for a in &step.appends {
            assert!(live.contains(&a.seq));
            tokens.get_mut(&a.seq).unwrap().push(a.token);
        }
        for id in &step.freed {
            assert!(live.remove(id), "free of a dead sequence {id}");
        }
        assert_eq!(live, g.running_ids().into_iter().collect::<HashSet<_>>());
        steps.push(step);
    }
    assert!(live.is_empty());
    let outputs = g
        .outputs()
        .iter()
        .map(|s| {
            assert_eq!(
                s.output_tokens(),
                tokens[&s.id()].as_slice(),
                "decisions and state disagree"
            );
            let out = s.output_tokens().to_vec();
            let sc = score(prompt.len(), &out, s.cumulative_logprob(), eos, lp);
            (out, sc)
        })
        .collect();
    BeamRun { outputs, steps }
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::MIN, f32::max);
    let lse = f64::from(max)
        + row
            .iter()
            .map(|&l| f64::from(l - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&l| f64::from(l) - lse).collect()
}

/// Hugging Face `BeamSearchScorer` + `BeamHypotheses` (transformers 4.2x–4.3x, decoder-only,
/// lengths counting the prompt), transcribed on plain vectors.
/// One beam-search configuration for the reference.
struct Search {
    width: usize,
    vocab: usize,
    eos: TokenId,
    max_new: usize,
    lp: f64,
    es: EarlyStopping,
}

fn hf_reference(prompt: &[TokenId], c: &Search, logits: LogitsFn<'_>) -> Vec<(Vec<TokenId>, f64)> {
    let Search {
        width,
        vocab,
        eos,
        max_new,
        lp,
        es,
    } = *c;
    let mut beams: Vec<(Vec<TokenId>, f64)> = vec![(Vec::new(), 0.0)];
    let mut hyps: Vec<(f64, Vec<TokenId>)> = Vec::new();
    let add = |hyps: &mut Vec<(f64, Vec<TokenId>)>, hyp: Vec<TokenId>, sum: f64, len: usize| {
        let s = sum / (len as f64).powf(lp);
        let worst = hyps.iter().map(|h| h.0).fold(f64::INFINITY, f64::min);
        if hyps.len() < width || s > worst {
            hyps.push((s, hyp));
            if hyps.len() > width {
                let (i, _) = hyps
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
                    .unwrap();
                hyps.remove(i);
            }
        }
    };
    let mut done = false;
    for step in 0..max_new {
        let cur_len = prompt.len() + step;
        let mut cands: Vec<(f64, usize, TokenId)> = Vec::new();
        for (b, (out, s)) in beams.iter().enumerate() {
            let lps = log_softmax(&logits(&[prompt, out].concat()));
            for (t, lpv) in lps.iter().enumerate().take(vocab) {
                cands.push((s + lpv, b, t as TokenId));
            }
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        cands.truncate(2 * width);
        let mut next = Vec::new();
        for (rank, &(s, b, t)) in cands.iter().enumerate() {
            let mut seq = beams[b].0.clone();
            seq.push(t);
            if t == eos {
                if rank >= width {
                    continue;
                }
                add(&mut hyps, seq, s, cur_len);
            } else {
                next.push((seq, s));
            }
            if next.len() == width {
                break;
            }
        }
        let best = cands[0].0;
        done = hyps.len() >= width && {
            let worst = hyps.iter().map(|h| h.0).fold(f64::INFINITY, f64::min);
            match es {
                EarlyStopping::True => true,
                EarlyStopping::False => worst >= best / (cur_len as f64).powf(lp),
                EarlyStopping::Never if lp > 0.0 => {
                    worst >= best / ((prompt.len() + max_new) as f64).powf(lp)
                }
                EarlyStopping::Never => worst >= best / (cur_len as f64).powf(lp),
            }
        };
        if done {
            break;
        }
        beams = next;
    }
    if !done {
        for (out, s) in beams {
            let len = prompt.len() + out.len();
            add(&mut hyps, out, s, len);
        }
    }
    hyps.sort_by(|a, b| b.0.total_cmp(&a.0));
    hyps.into_iter().map(|(s, h)| (h, s)).collect()
}

/// The worked example: vocabulary {a=0, b=1, EOS=2}, prompt [a], beam width 2.
fn worked_table(seq: &[TokenId]) -> Vec<f32> {
    let p: [f32; 3] = match (seq.len(), seq.last()) {
        (1, _) => [0.5, 0.3, 0.2],
        (_, Some(0)) => [0.12, 0.08, 0.8],
        _ => [0.6, 0.25, 0.15],
    };
    p.iter().map(|x| x.ln()).collect()
}

#[test]
fn hand_worked_hugging_face_example() {
    // Step 1 candidates: a (.5), b (.3) → running [a], [b]; EOS (rank 2 ≥ width) ignored.
    // Step 2 candidates: aE (.4), ba (.18), bb (.075), aa (.06): aE finishes with score
    //   ln(.4)/2 (length 1 + 2 − EOS); running [b,a], [b,b]; pool holds 1 < 2 hypotheses.
    // Step 3 candidates: baE (.144), bba (.045), baa (.0216), bbb (.01875): baE finishes with
    //   ln(.144)/3; the pool is full, and with early_stopping=True the search stops.
    let prompt = [0];
    let table: LogitsFn<'_> = &worked_table;
    let run = run_beam(
        beam_params(2, 2, 3, 1.0, EarlyStopping::True),
        &prompt,
        3,
        2,
        table,
    );
    let outs: Vec<Vec<TokenId>> = run.outputs.iter().map(|o| o.0.clone()).collect();
    assert_eq!(outs, vec![vec![0, 2], vec![1, 0, 2]]);
    assert!((run.outputs[0].1 - 0.4f64.ln() / 2.0).abs() < 1e-6);
    assert!((run.outputs[1].1 - 0.144f64.ln() / 3.0).abs() < 1e-6);

    // The decisions, step by step (root is sequence 0; new ids count from 1).
    let s = &run.steps;
    assert_eq!(s.len(), 3);
    assert_eq!(
        s[0].forks,
        vec![sampling::Fork {
            parent: 0,
            child: 1
        }]
    );
    assert_eq!(
        s[0].appends
            .iter()
            .map(|a| (a.seq, a.token))
            .collect::<Vec<_>>(),
        vec![(0, 0), (1, 1)]
    );
    assert!(s[0].freed.is_empty());
    // Sequence 1 continues as [b,a] and forks [b,b]; sequence 0 becomes the finished [a,EOS].
    assert_eq!(
        s[1].forks,
        vec![sampling::Fork {
            parent: 1,
            child: 2
        }]
    );
    assert_eq!(
        s[1].appends
            .iter()
            .map(|a| (a.seq, a.token))
            .collect::<Vec<_>>(),
        vec![(1, 0), (2, 1), (0, 2)]
    );
    assert_eq!(
        s[1].finished
            .iter()
            .map(|f| (f.seq, f.finish.clone()))
            .collect::<Vec<_>>(),
        vec![(0, Finish::Eos(2))]
    );
    assert_eq!(s[1].freed, vec![0]);
    // Sequence 1 finishes as [b,a,EOS]; sequence 2 has no selected child and is freed.
    assert!(s[2].forks.is_empty());
    assert_eq!(s[2].freed, vec![2, 1]);
    assert!(s[2].group_finished);

    // The other stopping rules agree here (see the randomised comparison for where they differ).
    for es in [EarlyStopping::False, EarlyStopping::Never] {
        let r = run_beam(beam_params(2, 2, 3, 1.0, es), &prompt, 3, 2, table);
        assert_eq!(
            r.outputs.iter().map(|o| o.0.clone()).collect::<Vec<_>>(),
            outs
        );
    }
}

#[test]
fn matches_hugging_face_transcription_on_random_tables() {
    let vocab = 6;
    let eos = 5;
    let mut mode_differences = 0;
    for salt in 0..12u64 {
        // A strong EOS bias on some tables makes hypotheses finish early and often.
        let bias = (salt % 3) as f32;
        let table = move |seq: &[TokenId]| {
            let mut l = toy_logits(seq, vocab, salt);
            l[eos as usize] += bias;
            l
        };
        for width in [2usize, 3] {
            for max_new in [3usize, 6] {
                for lp in [1.0, 0.5, 2.0, -0.5] {
                    let mut per_mode = Vec::new();
                    for es in [
                        EarlyStopping::True,
                        EarlyStopping::False,
                        EarlyStopping::Never,
                    ] {
                        let prompt = [1, 2];
                        let params =
                            beam_params(width as i64, width as i64, max_new as i64, lp, es);
                        let got = run_beam(params, &prompt, vocab, eos, &table).outputs;
                        let search = Search {
                            width,
                            vocab,
                            eos,
                            max_new,
                            lp,
                            es,
                        };
                        let want = hf_reference(&prompt, &search, &table);
                        let got_tokens: Vec<_> = got.iter().map(|o| &o.0).collect();
                        let want_tokens: Vec<_> = want.iter().map(|o| &o.0).collect();
                        assert_eq!(
                            got_tokens, want_tokens,
                            "salt {salt} w {width} T {max_new} lp {lp} {es:?}"
                        );
                        for (g, w) in got.iter().zip(&want) {
                            assert!((g.1 - w.1).abs() < 1e-5);
                        }
                        per_mode.push(got_tokens.into_iter().cloned().collect::<Vec<_>>());
                    }
                    mode_differences +=
                        usize::from(per_mode[0] != per_mode[2] || per_mode[1] != per_mode[2]);
                }
            }
        }
    }
    assert!(
        mode_differences > 0,
        "the cases never exercise early_stopping differences"
    );
}

#[test]
fn wide_beam_with_never_equals_exhaustive_search() {
    // Vocabulary {0, 1, EOS=2}, 3 new tokens: at most 12 candidates per step, so a width of 12
    // prunes nothing and the "never" rule is an exact bound: beam search = brute force.
    let (vocab, eos, max_new) = (3usize, 2, 3usize);
    let prompt = [0, 1];
    for salt in 0..6u64 {
        let table = move |seq: &[TokenId]| toy_logits(seq, vocab, salt);
        for lp in [1.0, 0.7, 2.0, 0.0, -1.0] {
            let mut all: Vec<(Vec<TokenId>, f64)> = Vec::new();
            let mut frontier: Vec<(Vec<TokenId>, f64)> = vec![(Vec::new(), 0.0)];
            for _ in 0..max_new {
                let mut next = Vec::new();
                for (out, cum) in &frontier {
                    let lps = log_softmax(&table(&[&prompt[..], out].concat()));
                    for t in 0..vocab as TokenId {
                        let mut o = out.clone();
                        o.push(t);
                        let c = cum + lps[t as usize];
                        if t == eos {
                            all.push((o.clone(), score(prompt.len(), &o, c, eos, lp)));
                        } else {
                            next.push((o, c));
                        }
                    }
                }
                frontier = next;
            }
            for (o, c) in frontier {
                let s = score(prompt.len(), &o, c, eos, lp);
                all.push((o, s));
            }
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let got = run_beam(
                beam_params(12, 5, max_new as i64, lp, EarlyStopping::Never),
                &prompt,
                vocab,
                eos,
                &table,
            )
            .outputs;
            let want: Vec<_> = all.iter().take(5).map(|a| a.0.clone()).collect();
            assert_eq!(
                got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
                want,
                "salt {salt} lp {lp}"
            );
        }
    }
}
