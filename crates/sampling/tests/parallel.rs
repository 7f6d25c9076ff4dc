//! Parallel sampling (n / best_of): prompt-step forks, per-sequence finishing and frees, and
//! returning the n best by cumulative logprob.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::{EOS, VOCAB, id_counter, model, toy_logits, validated};
use sampling::{GroupDecoder, SampleError, SamplingParams, Scratch, SeqId, TokenId};

#[test]
fn best_of_forks_from_the_prompt_and_returns_the_n_best() {
    let prompt: Vec<TokenId> = vec![0, 1];
    let params = SamplingParams {
        n: 2,
        best_of: Some(4),
        seed: Some(11),
        max_tokens: Some(8),
        ..Default::default()
    };
    let mut g = GroupDecoder::new(
        validated(params),
        Arc::from(prompt.as_slice()),
        7,
        model(VOCAB, &[EOS], 512),
        0,
    );
    let mut live: HashSet<SeqId> = HashSet::from([7]);
    let mut tokens: HashMap<SeqId, Vec<TokenId>> = HashMap::from([(7, Vec::new())]);
    let mut scratch = Scratch::default();
    let mut ids = id_counter(100);
    let mut first = true;
    let mut finished = Vec::new();
    while !g.is_finished() {
        let running = g.running_ids();
        let mut rows: Vec<f32> = running
            .iter()
            .flat_map(|id| {
                let mut l = toy_logits(&[&prompt[..], &tokens[id]].concat(), VOCAB, 2);
                l[EOS as usize] += 1.0;
                l
            })
            .collect();
        let step = g.step(&mut rows, &mut scratch, &mut ids).unwrap();
        if first {
            assert_eq!(running, vec![7]);
            let parents: Vec<_> = step.forks.iter().map(|f| f.parent).collect();
            assert_eq!(
                parents,
                vec![7, 7, 7],
                "best_of − 1 children of the prompt sequence"
            );
            assert_eq!(step.appends.len(), 4);
            first = false;
        } else {
            assert!(step.forks.is_empty());
            assert_eq!(step.appends.len(), running.len());
        }
        for f in &step.forks {
            assert!(live.contains(&f.parent) && live.insert(f.child));
            tokens.insert(f.child, tokens[&f.parent].clone());
        }
        for a in &step.appends {
            tokens.get_mut(&a.seq).unwrap().push(a.token);
        }
        for f in &step.finished {
            finished.push(f.seq);
        }
        assert_eq!(
            step.freed,
            step.finished.iter().map(|f| f.seq).collect::<Vec<_>>()
        );
        for id in &step.freed {
            assert!(live.remove(id));
        }
        assert_eq!(live, g.running_ids().into_iter().collect());
    }
    finished.sort_unstable();
    assert_eq!(finished, vec![7, 100, 101, 102]);
    let mut all: Vec<(f64, SeqId)> = finished
        .iter()
        .map(|&id| (g.sequence(id).unwrap().cumulative_logprob(), id))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let outs: Vec<SeqId> = g.outputs().iter().map(|s| s.id()).collect();
    assert_eq!(outs, vec![all[0].1, all[1].1]);
    for s in g.outputs() {
        assert_eq!(s.output_tokens(), tokens[&s.id()].as_slice());
    }
    // Samples with replacement from the same row still diverge afterwards.
    let distinct: HashSet<_> = tokens.values().collect();
    assert!(distinct.len() > 1);
}

#[test]
fn step_errors_are_reported_not_panics() {
    let mut g = GroupDecoder::new(
        validated(SamplingParams {
            n: 2,
            ..Default::default()
        }),
        Arc::from(&[0u32][..]),
        1,
        model(VOCAB, &[EOS], 64),
        0,
    );
    let mut scratch = Scratch::default();
    let mut wrong = vec![0.0; VOCAB + 1];
    assert!(matches!(
        g.step(&mut wrong, &mut scratch, &mut || 5),
        Err(SampleError::LogitsShape { .. })
    ));
    let mut row = vec![0.0; VOCAB];
    assert_eq!(
        g.step(&mut row, &mut scratch, &mut || 1),
        Err(SampleError::DuplicateSeqId(1))
    );
}
