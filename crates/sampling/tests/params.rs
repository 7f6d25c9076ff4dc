//! SamplingParams: defaults, JSON forms, every validation message, adjustments as warnings.

use sampling::{EarlyStopping, ParamWarning, SamplingParams, SamplingType};

fn err(p: SamplingParams) -> String {
    p.validate().expect_err("must be rejected").to_string()
}

fn base() -> SamplingParams {
    SamplingParams::default()
}

#[test]
fn defaults_match_vllm() {
    let p: SamplingParams = serde_json::from_str("{}").unwrap();
    assert_eq!(p, SamplingParams::default());
    assert_eq!(
        (p.n, p.best_of, p.max_tokens, p.top_k),
        (1, None, Some(16), -1)
    );
    assert_eq!(
        (p.temperature, p.top_p, p.min_p, p.repetition_penalty),
        (1.0, 1.0, 0.0, 1.0)
    );
    assert!(p.skip_special_tokens && !p.ignore_eos && !p.use_beam_search);
    assert_eq!(p.early_stopping, EarlyStopping::False);
    let (v, warnings) = p.validate().unwrap();
    assert!(warnings.is_empty());
    assert_eq!(
        (v.n(), v.best_of(), v.max_tokens(), v.top_k()),
        (1, 1, Some(16), None)
    );
    assert_eq!(v.sampling_type(), SamplingType::Random);
}

#[test]
fn json_forms_of_stop_early_stopping_and_logit_bias() {
    let p: SamplingParams = serde_json::from_str(r#"{"stop": "@@@"}"#).unwrap();
    assert_eq!(p.stop, vec!["@@@"]);
    let p: SamplingParams = serde_json::from_str(r#"{"stop": ["a", "b"]}"#).unwrap();
    assert_eq!(p.stop, vec!["a", "b"]);
    let p: SamplingParams = serde_json::from_str(r#"{"stop": null}"#).unwrap();
    assert!(p.stop.is_empty());
    for (json, want) in [
        ("true", EarlyStopping::True),
        ("false", EarlyStopping::False),
        ("\"never\"", EarlyStopping::Never),
    ] {
        let p: SamplingParams =
            serde_json::from_str(&format!(r#"{{"early_stopping": {json}}}"#)).unwrap();
        assert_eq!(p.early_stopping, want);
        assert_eq!(serde_json::to_string(&want).unwrap(), json);
    }
    let e = serde_json::from_str::<SamplingParams>(r#"{"early_stopping": "always"}"#).unwrap_err();
    assert!(
        e.to_string()
            .contains("early_stopping must be True, False, or 'never', got always."),
        "{e}"
    );
    let p: SamplingParams = serde_json::from_str(r#"{"logit_bias": {"7": -5.5}}"#).unwrap();
    assert_eq!(p.logit_bias.get(&7), Some(&-5.5));
}

#[test]
fn every_range_message_is_vllms() {
    let cases: Vec<(SamplingParams, &str)> = vec![
        (
            SamplingParams { n: 0, ..base() },
            "n must be at least 1, got 0.",
        ),
        (
            SamplingParams {
                n: 3,
                best_of: Some(2),
                ..base()
            },
            "best_of must be greater than or equal to n, got n=3 and best_of=2.",
        ),
        (
            SamplingParams {
                presence_penalty: 2.5,
                ..base()
            },
            "presence_penalty must be in [-2, 2], got 2.5.",
        ),
        (
            SamplingParams {
                frequency_penalty: -3.0,
                ..base()
            },
            "frequency_penalty must be in [-2, 2], got -3.0.",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..base()
            },
            "repetition_penalty must be in (0, 2], got 0.0.",
        ),
        (
            SamplingParams {
                temperature: -1.0,
                ..base()
            },
            "temperature must be non-negative, got -1.0.",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..base()
            },
            "top_p must be in (0, 1], got 0.0.",
        ),
        (
            SamplingParams { top_k: 0, ..base() },
            "top_k must be -1 (disable), or at least 1, got 0.",
        ),
        (
            SamplingParams {
                top_k: -2,
                ..base()
            },
            "top_k must be -1 (disable), or at least 1, got -2.",
        ),
        (
            SamplingParams {
                min_p: 1.5,
                ..base()
            },
            "min_p must be in [0, 1], got 1.5.",
        ),
        (
            SamplingParams {
                max_tokens: Some(0),
                ..base()
            },
            "max_tokens must be at least 1, got 0.",
        ),
        (
            SamplingParams {
                min_tokens: -1,
                ..base()
            },
            "min_tokens must be greater than or equal to 0, got -1.",
        ),
        (
            SamplingParams {
                min_tokens: 20,
                max_tokens: Some(10),
                ..base()
            },
            "min_tokens must be less than or equal to max_tokens=10, got 20.",
        ),
        (
            SamplingParams {
                logprobs: Some(-1),
                ..base()
            },
            "logprobs must be non-negative, got -1.",
        ),
        (
            SamplingParams {
                prompt_logprobs: Some(-2),
                ..base()
            },
            "prompt_logprobs must be non-negative, got -2.",
        ),
        (
            SamplingParams {
                stop: vec!["x".into(), String::new()],
                ..base()
            },
            "stop cannot contain an empty string.",
        ),
        (
            SamplingParams {
                temperature: f64::NAN,
                ..base()
            },
            "temperature must be non-negative, got NaN.",
        ),
    ];
    for (params, message) in cases {
        assert_eq!(err(params), message);
    }
}

#[test]
fn greedy_beam_and_non_beam_messages() {
    assert_eq!(
        err(SamplingParams {
            temperature: 0.0,
            n: 2,
            ..base()
        }),
        "best_of must be 1 when using greedy sampling.Got 2."
    );
    let beam = SamplingParams {
        use_beam_search: true,
        best_of: Some(4),
        temperature: 0.0,
        ..base()
    };
    assert!(beam.clone().validate().is_ok());
    let cases = [
        (
            SamplingParams {
                best_of: None,
                ..beam.clone()
            },
            "best_of must be greater than 1 when using beam search. Got 1.",
        ),
        (
            SamplingParams {
                temperature: 0.5,
                ..beam.clone()
            },
            "temperature must be 0 when using beam search.",
        ),
        (
            SamplingParams {
                top_p: 0.9,
                ..beam.clone()
            },
            "top_p must be 1 when using beam search.",
        ),
        (
            SamplingParams {
                top_k: 5,
                ..beam.clone()
            },
            "top_k must be -1 when using beam search.",
        ),
        (
            SamplingParams {
                early_stopping: EarlyStopping::Never,
                ..base()
            },
            "early_stopping is not effective and must be False when not using beam search.",
        ),
        (
            SamplingParams {
                length_penalty: 1.2,
                ..base()
            },
            "length_penalty is not effective and must be the default value of 1.0 when not using beam search.",
        ),
    ];
    for (params, message) in cases {
        assert_eq!(err(params), message);
    }
}

#[test]
fn adjustments_are_reported_not_silent() {
    let (v, w) = SamplingParams {
        temperature: 0.001,
        ..base()
    }
    .validate()
    .unwrap();
    assert_eq!(v.temperature, 0.01);
    assert_eq!(
        w,
        vec![ParamWarning::TemperatureRaised {
            requested: 0.001,
            used: 0.01
        }]
    );
    assert!(w[0].to_string().contains("maxed it out to 0.01"));

    let (v, w) = SamplingParams {
        temperature: 0.0,
        top_p: 0.5,
        top_k: 3,
        min_p: 0.2,
        ..base()
    }
    .validate()
    .unwrap();
    assert_eq!(v.sampling_type(), SamplingType::Greedy);
    assert_eq!((v.top_p, v.top_k(), v.min_p), (1.0, None, 0.0));
    let fields: Vec<_> = w
        .iter()
        .map(|w| match w {
            ParamWarning::IgnoredUnderGreedy { field, .. } => *field,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(fields, ["top_p", "top_k", "min_p"]);

    let mut p = base();
    p.logit_bias.insert(3, 250.0);
    p.logit_bias.insert(1, -1.0);
    let (v, w) = p.validate().unwrap();
    assert_eq!(v.logit_bias[&3], 100.0);
    assert_eq!(v.logit_bias[&1], -1.0);
    assert_eq!(
        w,
        vec![ParamWarning::LogitBiasClamped {
            token: 3,
            requested: 250.0,
            used: 100.0
        }]
    );

    let (v, w) = SamplingParams {
        seed: Some(-1),
        ..base()
    }
    .validate()
    .unwrap();
    assert!(w.is_empty());
    assert_eq!(v.seed(), None);
    let (v, _) = SamplingParams {
        seed: Some(7),
        ..base()
    }
    .validate()
    .unwrap();
    assert_eq!(v.sampling_type(), SamplingType::RandomSeeded);
}

#[test]
fn best_of_defaults_to_n_and_beam_type() {
    let (v, _) = SamplingParams { n: 3, ..base() }.validate().unwrap();
    assert_eq!((v.n(), v.best_of()), (3, 3));
    let (v, _) = SamplingParams {
        use_beam_search: true,
        n: 2,
        best_of: Some(3),
        temperature: 0.0,
        length_penalty: 0.5,
        early_stopping: EarlyStopping::Never,
        ..base()
    }
    .validate()
    .unwrap();
    assert_eq!(v.sampling_type(), SamplingType::Beam);
    assert_eq!((v.n(), v.best_of()), (2, 3));
}
