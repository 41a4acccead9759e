//! Fits the impostor-score tail behind `open_set_threshold` and measures the
//! open-set rule on lfw-dev.
//!
//! ```text
//! cargo run --release -p facefleet-model --example calibrate_open_set -- \
//!     [--recognizer mobilefacenet|dlib-resnet] [--dir PATH] [--splits N] [--far 0.02,0.03,0.05]
//! ```
//! 1. Embeds every photo of the folder (default: shared lfw-dev, 63 people x
//!    6 photos), collects the cosine similarity of every pair of photos of
//!    different people (impostor pairs) and fits their upper tail
//!    (`ImpostorTail::fit`: a normal tail through the 95th to 99.9th
//!    percentiles): these are the constants shipped in `ImpostorTail::of`.
//! 2. Checks the fit: the measured share of impostor pairs above a few
//!    thresholds against the model, and a two-fold check by person (fit on
//!    half the people, predict the other half).
//! 3. Open-set experiments: enroll `k` people chosen at random (first
//!    photo), query their other photos and all photos of the people left
//!    out; `--splits` random choices per `k`. Prints closed-set top-1,
//!    enrolled answered correctly, and unknown people rejected, at the fixed
//!    `default_threshold`, at the thresholds the fitted tail gives for each
//!    `--far` target, and at the shipped `open_set_threshold(kind, k)`.
//! 4. The same experiments held out: the tail is fitted on half of the
//!    people and the open set is measured on the other half only (enrolled
//!    and strangers from the half the fit never saw), both ways round.
//! 5. Normalised scores against the raw one: for each decision score (raw
//!    best similarity s1; s1 minus the second best; s1 minus the mean of
//!    the query's other scores; the z-score of s1 among them), the share
//!    of enrolled queries answered right at the threshold that rejects
//!    95 / 98 / 99 % of the strangers (chosen after the fact, so each score
//!    gets its best threshold).

use anyhow::{bail, Context, Result};
use facefleet_model::eval::{dataset_dir, PeopleSet, Role, SplitResult};
use facefleet_model::{
    default_threshold, open_set_threshold, Embedding, FaceModel, ImpostorTail, ModelConfig, RecognizerKind, OPEN_SET_FAR,
};

/// Deterministic shuffle (xorshift), so runs are repeatable.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// Roles for one random open-set experiment among the people `pool` (of
/// `people` in all): `k` of them enrolled, the rest of the pool strangers,
/// everybody outside the pool absent.
fn random_roles(pool: &[usize], people: usize, k: usize, seed: u64) -> Vec<Role> {
    let mut roles = vec![Role::Absent; people];
    for (n, &j) in shuffled(pool.len(), seed).iter().enumerate() {
        roles[pool[j]] = if n < k { Role::Enrolled } else { Role::Stranger };
    }
    roles
}

/// One line of an open-set table: the counts at the fixed threshold, at
/// the threshold a fitted tail gives for each FAR target, and (optionally)
/// at the shipped rule, whose threshold for this gallery size it keeps.
struct Row {
    fixed: SplitResult,
    far: Vec<SplitResult>,
    rule: Option<(f32, SplitResult)>,
}

impl Row {
    fn new(targets: usize, rule_threshold: Option<f32>) -> Self {
        Row {
            fixed: SplitResult::default(),
            far: vec![SplitResult::default(); targets],
            rule: rule_threshold.map(|t| (t, SplitResult::default())),
        }
    }

    /// Runs one experiment with `roles` at every threshold of the row.
    fn add(&mut self, set: &PeopleSet, roles: &[Role], fixed: f32, fars: &[f64], tail: &ImpostorTail, kind: RecognizerKind) {
        self.fixed.add(&set.open_set_split(roles, |_| fixed));
        for (r, &far) in self.far.iter_mut().zip(fars) {
            r.add(&set.open_set_split(roles, |n| tail.threshold_for(far, n).max(fixed)));
        }
        if let Some((_, r)) = &mut self.rule {
            r.add(&set.open_set_split(roles, |n| open_set_threshold(kind, n)));
        }
    }

    /// Prints the line; `thresholds` label the FAR columns.
    fn print(&self, k: usize, fixed: f32, thresholds: &[String]) {
        let f = &self.fixed;
        print!("  {k:>3} {:>8.2} | {fixed:>8.3} {:>9.2} {:>9.2}", f.top1_pct(), f.enrolled_pct(), f.unknown_pct());
        for (r, t) in self.far.iter().zip(thresholds) {
            print!(" | {t:>13} {:>9.2} {:>9.2}", r.enrolled_pct(), r.unknown_pct());
        }
        if let Some((rule_t, r)) = &self.rule {
            print!(" | {rule_t:>8.3} {:>9.2} {:>9.2}", r.enrolled_pct(), r.unknown_pct());
        }
        println!();
    }
}

/// One query's similarities to a gallery, for comparing decision scores.
struct QueryScores {
    /// A stranger's query (else an enrolled person's).
    stranger: bool,
    /// An enrolled person's query whose nearest entry is that person.
    right: bool,
    best: f32,
    second: f32,
    mean_rest: f32,
    sd_rest: f32,
}

/// A decision score computed from one query's similarities.
type DecisionScore = fn(&QueryScores) -> f32;

/// Every query of one experiment (photos without a face are left out of
/// the strangers and count as wrong for the enrolled).
fn query_scores(set: &PeopleSet, roles: &[Role]) -> Vec<QueryScores> {
    let gallery: Vec<(usize, &Embedding)> = (0..roles.len())
        .filter(|&i| roles[i] == Role::Enrolled)
        .filter_map(|i| set.people[i].embeddings.first().and_then(|e| e.as_ref()).map(|e| (i, e)))
        .collect();
    let mut out = Vec::new();
    for (i, role, q) in set.open_set_queries(roles) {
        let Some(q) = q else {
            if role == Role::Enrolled {
                out.push(QueryScores { stranger: false, right: false, best: 0.0, second: 0.0, mean_rest: 0.0, sd_rest: 0.0 });
            }
            continue;
        };
        let mut s: Vec<(f32, usize)> = gallery.iter().map(|(j, e)| (q.cosine(e), *j)).collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        let rest: Vec<f32> = s[1..].iter().map(|x| x.0).collect();
        let mean_rest = rest.iter().sum::<f32>() / rest.len() as f32;
        let sd_rest = (rest.iter().map(|x| (x - mean_rest).powi(2)).sum::<f32>() / rest.len() as f32).sqrt();
        out.push(QueryScores {
            stranger: role == Role::Stranger,
            right: role == Role::Enrolled && s[0].1 == i,
            best: s[0].0,
            second: s[1].0,
            mean_rest,
            sd_rest,
        });
    }
    out
}

fn main() -> Result<()> {
    let mut kind = RecognizerKind::default();
    let mut dir = None;
    let mut splits = 40usize;
    let mut fars = vec![0.02, 0.03, 0.05];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--recognizer" => {
                kind = args.next().context("--recognizer needs a value")?.parse().map_err(anyhow::Error::msg)?
            }
            "--dir" => dir = Some(std::path::PathBuf::from(args.next().context("--dir needs a value")?)),
            "--splits" => splits = args.next().context("--splits needs a value")?.parse::<usize>()?.max(1),
            "--far" => {
                fars = args
                    .next()
                    .context("--far needs a value")?
                    .split(',')
                    .map(|v| v.parse::<f64>())
                    .collect::<std::result::Result<_, _>>()?
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let dir = match dir {
        Some(d) => d,
        None => dataset_dir("lfw-dev")?,
    };
    let model = FaceModel::load(&ModelConfig::with_recognizer(kind))?;
    let set = PeopleSet::embed_folder(&model, &dir)?;
    let people = set.people.len();
    println!("{kind}: {people} people, {} photos without a face (CPU {}, SIMD path {})", set.no_face().len(), facefleet_model::simd::cpu_model(), facefleet_model::simd::simd_summary());

    // 1. Fit.
    let impostor = set.impostor_scores(|_| true);
    let genuine = set.genuine_scores();
    let fit = ImpostorTail::fit(&impostor).context("too few impostor pairs to fit")?;
    let shipped = ImpostorTail::of(kind);
    println!("impostor pairs: {}, genuine pairs: {}", impostor.len(), genuine.len());
    println!(
        "fitted tail: ImpostorTail {{ mean: {:.4}, sd: {:.4} }}  (shipped: mean {:.4}, sd {:.4})",
        fit.mean, fit.sd, shipped.mean, shipped.sd
    );

    // 2. Fit check.
    let share = |scores: &[f32], t: f32| scores.iter().filter(|&&s| s >= t).count() as f64 / scores.len().max(1) as f64;
    println!("  t       impostor >= t (measured / model)   genuine >= t");
    for i in 0..12 {
        let t = fit.threshold_for_pair_rate(0.05) + i as f32 * fit.sd * 0.3;
        println!(
            "  {t:.3}   {:>10.2e} / {:>10.2e}          {:>6.2} %",
            share(&impostor, t),
            fit.pair_rate(t),
            100.0 * share(&genuine, t)
        );
    }
    let even = set.impostor_scores(|i| i % 2 == 0);
    let odd = set.impostor_scores(|i| i % 2 == 1);
    if let (Some(fe), Some(fo)) = (ImpostorTail::fit(&even), ImpostorTail::fit(&odd)) {
        println!("two-fold by person (fit on one half, measure the other):");
        for (name, f, other) in [("even->odd", fe, &odd), ("odd->even", fo, &even)] {
            for p in [1e-2, 1e-3, 1e-4] {
                let t = f.threshold_for_pair_rate(p);
                println!("  {name}: pair rate {p:.0e} -> t {t:.3}; measured on the other half {:.2e}", share(other, t));
            }
        }
    }

    // 3. Open-set experiments.
    println!(
        "open set, {splits} random galleries per size; rule = open_set_threshold (FAR per query {:.0} %)",
        100.0 * OPEN_SET_FAR
    );
    print!("  {:>3} {:>8} | {:>8} {:>9} {:>9}", "k", "top-1 %", "fixed t", "enr ok %", "unk rej %");
    for far in &fars {
        print!(" | {:>13} {:>9} {:>9}", format!("t@{:.0}%", 100.0 * far), "enr ok %", "unk rej %");
    }
    println!(" | {:>8} {:>9} {:>9}", "rule t", "enr ok %", "unk rej %");
    let fixed = default_threshold(kind);
    let everybody: Vec<usize> = (0..people).collect();
    for k in [4usize, 8, 16, 24, 31, 40, 48, 56] {
        if k >= people {
            continue;
        }
        let mut row = Row::new(fars.len(), Some(open_set_threshold(kind, k)));
        for sp in 0..splits {
            row.add(&set, &random_roles(&everybody, people, k, (k * 1000 + sp) as u64), fixed, &fars, &fit, kind);
        }
        let thresholds: Vec<String> = fars.iter().map(|&far| format!("{:.3}", fit.threshold_for(far, k).max(fixed))).collect();
        row.print(k, fixed, &thresholds);
    }

    // 4. Held out: fit on one half of the people, measure on the other.
    let halves: [Vec<usize>; 2] = [(0..people).filter(|i| i % 2 == 0).collect(), (0..people).filter(|i| i % 2 == 1).collect()];
    let folds: Vec<(ImpostorTail, &Vec<usize>)> = [(0, 1), (1, 0)]
        .into_iter()
        .filter_map(|(fit_half, test_half)| {
            let h = &halves[fit_half];
            ImpostorTail::fit(&set.impostor_scores(|i| h.contains(&i))).map(|f| (f, &halves[test_half]))
        })
        .collect();
    if folds.len() == 2 {
        println!(
            "held out: tail fitted on one half of the people, open set measured on the other half only \
             (both folds, {splits} random galleries per size and fold)"
        );
        print!("  {:>3} {:>8} | {:>8} {:>9} {:>9}", "k", "top-1 %", "fixed t", "enr ok %", "unk rej %");
        for far in &fars {
            print!(" | {:>13} {:>9} {:>9}", format!("t@{:.0}% (a/b)", 100.0 * far), "enr ok %", "unk rej %");
        }
        println!();
        let smallest_half = halves.iter().map(Vec::len).min().unwrap_or(0);
        for k in [4usize, 8, 12, 16, 20, 24] {
            if k >= smallest_half {
                continue;
            }
            let mut row = Row::new(fars.len(), None);
            for (tail, test) in &folds {
                for sp in 0..splits {
                    row.add(&set, &random_roles(test, people, k, (k * 1000 + sp) as u64), fixed, &fars, tail, kind);
                }
            }
            let thresholds: Vec<String> = fars
                .iter()
                .map(|&far| {
                    let (a, b) = (folds[0].0.threshold_for(far, k).max(fixed), folds[1].0.threshold_for(far, k).max(fixed));
                    format!("{a:.3}/{b:.3}")
                })
                .collect();
            row.print(k, fixed, &thresholds);
        }
    }
    // 5. Normalised scores.
    println!("decision scores compared (enrolled answered right at the threshold rejecting 95 / 98 / 99 % of strangers):");
    let scores: [(&str, DecisionScore); 4] = [
        ("raw s1", |q| q.best),
        ("s1 - s2", |q| q.best - q.second),
        ("s1 - mean", |q| q.best - q.mean_rest),
        ("z of s1", |q| (q.best - q.mean_rest) / q.sd_rest.max(1e-3)),
    ];
    for k in [16usize, 31, 56] {
        if k + 2 > people {
            continue;
        }
        let mut queries = Vec::new();
        for sp in 0..splits {
            queries.extend(query_scores(&set, &random_roles(&everybody, people, k, (k * 1000 + sp) as u64)));
        }
        for &(name, score) in &scores {
            let mut strangers: Vec<f32> = queries.iter().filter(|q| q.stranger).map(score).collect();
            strangers.sort_by(|a, b| b.total_cmp(a));
            let enrolled = queries.iter().filter(|q| !q.stranger).count().max(1);
            print!("  k {k:>2} {name:<10}");
            for rejected in [0.95, 0.98, 0.99] {
                let t = strangers[((1.0 - rejected) * strangers.len() as f64) as usize];
                let right = queries.iter().filter(|q| q.right && score(q) > t).count();
                print!("  {:>6.2} %", 100.0 * right as f64 / enrolled as f64);
            }
            println!();
        }
    }
    println!("open_set_threshold for larger galleries (extrapolated from the fitted tail):");
    for n in [1usize, 10, 31, 100, 248, 1000, 2500, 10_000, 25_000, 100_000] {
        println!(
            "  {n:>7} people: {:.3}  (model: {:.2} % of unknown queries rejected; genuine pairs above it {:.1} %)",
            open_set_threshold(kind, n),
            100.0 * (1.0 - shipped.far_per_query(open_set_threshold(kind, n), n)),
            100.0 * share(&genuine, open_set_threshold(kind, n))
        );
    }
    Ok(())
}
