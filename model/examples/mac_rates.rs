//! Peak multiply-add rates of the vector instructions the model's products
//! are built from, on one core with every operand in L1: how much an integer
//! product can gain over f32 on this CPU, before memory, packing and
//! epilogues take their share.
//!
//! ```text
//! cargo run --release -p facefleet-model --example mac_rates -- [--seconds S]
//! ```
//! Every row runs the loop shape of the model's 1x1 kernels (`int16.rs`):
//! a tile of 4 output channels by 2 vectors of pixels (8 sums), over 64
//! steps, each step loading the pixels' inputs and broadcasting one weight
//! word per channel from memory. Rows:
//! - `f32 FMA`: `vfmadd231ps`, the f32 products (8 lanes, 8 multiply-adds
//!   per instruction on 256 bits, 16 on 512);
//! - `int16 vpmaddwd + vpaddd`: the AVX2 integer kernel (16 per pair);
//! - `int8 vpmaddubsw + vpmaddwd + vpaddd`: 8-bit inputs, which the model
//!   does not use (32 per triple; see the model README for why);
//! - `AVX-VNNI int16 vpdpwssd (256 bits)`: the AVX2+AVX-VNNI level's
//!   instruction (16 per instruction), where the CPU has AVX-VNNI;
//! - `int16 vpdpwssd` / `int8 vpdpbusd`: AVX-512 VNNI on 512 bits (32 and 64
//!   per instruction; the model's VNNI kernel uses the first).
//!
//! One tile shape for every row keeps them comparable; it suits the AVX2
//! rows (16 registers). On 512 bits, 8 sums barely cover two FMA ports'
//! latency, so the AVX-512 rows are a floor (the model's VNNI kernel keeps
//! 24 sums); so is the AVX-VNNI row, whose 8 sums leave the instruction
//! waiting (the model's AVX-VNNI tile keeps 12).
//!
//! Each row is the best of 5 timed runs (a peak rate, not a typical one),
//! in billions of multiply-adds per second, and as a share of the AVX2 f32
//! row. Only x86_64 has rows; elsewhere the example says so and exits.

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut seconds = 0.3f64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().context("--seconds needs a value")?.parse().context("--seconds: not a number")?,
            other => bail!("unknown argument {other:?} (usage: mac_rates [--seconds S])"),
        }
    }
    println!("CPU: {}; features {:?}", facefleet_model::simd::cpu_model(), facefleet_model::simd::cpu_features());
    run(seconds)
}

#[cfg(not(target_arch = "x86_64"))]
fn run(_seconds: f64) -> Result<()> {
    println!("mac_rates measures x86_64 instructions only; nothing to measure on this CPU");
    Ok(())
}

/// A row's loop: `kernel(n)` runs `n` tiles and returns the multiply-adds
/// it did.
#[cfg(target_arch = "x86_64")]
type Kernel = Box<dyn Fn(u64) -> u64>;

#[cfg(target_arch = "x86_64")]
fn run(seconds: f64) -> Result<()> {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma")) {
        println!("this CPU has no AVX2 and FMA; nothing to measure");
        return Ok(());
    }
    let vnni = has!("avx512f") && has!("avx512bw") && has!("avx512vnni");
    // SAFETY (every `unsafe` below): AVX2 and FMA were checked above; the
    // AVX-512 f32 row runs only with AVX-512 F, the VNNI rows only when
    // `vnni` holds.
    let mut rows: Vec<(&str, Kernel)> = vec![
        ("AVX2 f32 FMA", Box::new(|n| unsafe { x86::f32_avx2(n) })),
        ("AVX2 int16 vpmaddwd + vpaddd", Box::new(|n| unsafe { x86::int16_avx2(n) })),
        ("AVX2 int8 vpmaddubsw + vpmaddwd + vpaddd", Box::new(|n| unsafe { x86::int8_avx2(n) })),
    ];
    if has!("avxvnni") {
        rows.push(("AVX-VNNI int16 vpdpwssd (256 bits)", Box::new(|n| unsafe { x86::int16_avxvnni(n) })));
    }
    if has!("avx512f") {
        rows.push(("AVX-512 f32 FMA", Box::new(|n| unsafe { x86::f32_avx512(n) })));
    }
    if vnni {
        rows.push(("AVX-512 int16 vpdpwssd", Box::new(|n| unsafe { x86::int16_vnni(n) })));
        rows.push(("AVX-512 int8 vpdpbusd", Box::new(|n| unsafe { x86::int8_vnni(n) })));
    }
    println!("1 thread, operands in L1, best of 5 runs of {seconds} s");
    println!("{:<44} {:>12} {:>14}", "instructions", "GMAC/s", "vs AVX2 f32");
    let mut base = None;
    for (name, kernel) in &rows {
        let rate = best_rate(kernel.as_ref(), seconds);
        let base = *base.get_or_insert(rate);
        println!("{name:<44} {:>12.1} {:>13.2}x", rate / 1e9, rate / base);
    }
    Ok(())
}

/// The best of 5 runs of `kernel`, in multiply-adds per second. `kernel(n)`
/// runs `n` tiles and returns the multiply-adds it did.
#[cfg(target_arch = "x86_64")]
fn best_rate(kernel: &dyn Fn(u64) -> u64, seconds: f64) -> f64 {
    use std::time::Instant;
    // Calibrate the tile count to about `seconds` per run.
    let mut n = 1_000u64;
    loop {
        let t = Instant::now();
        std::hint::black_box(kernel(n));
        let took = t.elapsed().as_secs_f64();
        if took > seconds / 10.0 {
            n = ((n as f64) * seconds / took).max(1.0) as u64;
            break;
        }
        n *= 4;
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let macs = std::hint::black_box(kernel(n));
            macs as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Steps per tile (input words per pixel, as a 128-channel layer's pairs).
    const STEPS: usize = 64;
    /// Output channels per tile.
    const ROWS: usize = 4;

    /// Inputs: `[STEPS][2 vectors][16 words]` (room for 512-bit vectors);
    /// weights: `[STEPS][ROWS]` words. For the integer rows, small values,
    /// so that no sum wraps.
    fn int_operands() -> (Vec<i32>, Vec<i32>) {
        let x = (0..STEPS * 32).map(|i| (i as i32 * 7) & 0x1f1f_1f1f).collect();
        let w = (0..STEPS * ROWS).map(|i| (i as i32 * 3) & 0x1f1f_1f1f).collect();
        (x, w)
    }

    /// [`int_operands`] for the f32 rows: the bits of ordinary values near
    /// 1 (no denormals, which some cores handle slowly).
    fn f32_operands() -> (Vec<i32>, Vec<i32>) {
        let bits = |n: usize, k: usize| (0..n).map(|i| (1.0f32 + (i % k) as f32 / 1024.0).to_bits() as i32).collect();
        (bits(STEPS * 32, 7), bits(STEPS * ROWS, 3))
    }

    /// `n` tiles of 4 channels by 2 vectors over `STEPS` steps on the
    /// operands `(x, w)`: `load(p)`
    /// reads a vector of inputs at word `p`, `bcast(p)` broadcasts weight
    /// word `p`, `step(acc, w, x)` multiplies and adds. Returns the sum of
    /// all lanes' first words (so that nothing is optimised away).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles<V: Copy>(n: u64, (x, w): (Vec<i32>, Vec<i32>), zero: V, load: impl Fn(*const i32) -> V, bcast: impl Fn(*const i32) -> V, step: impl Fn(V, V, V) -> V, first: impl Fn(V) -> i64) -> i64 {
        let mut total = 0i64;
        for _ in 0..n {
            let mut acc = [[zero; 2]; ROWS];
            for j in 0..STEPS {
                let xs = [load(x.as_ptr().add(j * 32)), load(x.as_ptr().add(j * 32 + 16))];
                for (r, row) in acc.iter_mut().enumerate() {
                    let wv = bcast(w.as_ptr().add(j * ROWS + r));
                    for (a, xv) in row.iter_mut().zip(&xs) {
                        *a = step(*a, wv, *xv);
                    }
                }
            }
            total = acc.iter().flatten().fold(total, |t, &a| t.wrapping_add(first(a)));
            // Keep the tiles from being folded into one.
            std::arch::asm!("", options(nomem, nostack));
        }
        total
    }

    /// Multiply-adds in `n` tiles whose instruction does `per_instruction`
    /// of them.
    fn macs(n: u64, per_instruction: usize) -> u64 {
        n * (STEPS * ROWS * 2 * per_instruction) as u64
    }

    /// `pub unsafe fn $name(n) -> u64`: `n` tiles of `$step` on the
    /// `$features` CPU features, returning the multiply-adds done
    /// (`$per` per instruction).
    macro_rules! rate {
        ($name:ident, $features:literal, $per:expr, $ops:expr, $zero:expr, $load:expr, $bcast:expr, $step:expr, $first:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(n: u64) -> u64 {
                std::hint::black_box(tiles(n, $ops, $zero, $load, $bcast, $step, $first));
                macs(n, $per)
            }
        };
    }

    rate!(f32_avx2, "avx2,fma", 8, f32_operands(), _mm256_setzero_ps(),
        |p| _mm256_loadu_ps(p as *const f32),
        |p| _mm256_broadcast_ss(&*(p as *const f32)),
        |a, w, x| _mm256_fmadd_ps(w, x, a),
        |a| _mm256_cvtss_f32(a) as i64);
    rate!(int16_avx2, "avx2,fma", 16, int_operands(), _mm256_setzero_si256(),
        |p| _mm256_loadu_si256(p as *const __m256i),
        |p| _mm256_set1_epi32(*p),
        |a, w, x| _mm256_add_epi32(a, _mm256_madd_epi16(w, x)),
        |a| _mm256_cvtsi256_si32(a) as i64);
    rate!(int8_avx2, "avx2,fma", 32, int_operands(), _mm256_setzero_si256(),
        |p| _mm256_loadu_si256(p as *const __m256i),
        |p| _mm256_set1_epi32(*p),
        |a, w, x| _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1))),
        |a| _mm256_cvtsi256_si32(a) as i64);
    rate!(int16_avxvnni, "avx2,fma,avxvnni", 16, int_operands(), _mm256_setzero_si256(),
        |p| _mm256_loadu_si256(p as *const __m256i),
        |p| _mm256_set1_epi32(*p),
        |a, w, x| _mm256_dpwssd_avx_epi32(a, w, x),
        |a| _mm256_cvtsi256_si32(a) as i64);
    rate!(f32_avx512, "avx512f", 16, f32_operands(), _mm512_setzero_ps(),
        |p| _mm512_loadu_ps(p as *const f32),
        |p| _mm512_set1_ps(*(p as *const f32)),
        |a, w, x| _mm512_fmadd_ps(w, x, a),
        |a| _mm512_cvtss_f32(a) as i64);
    rate!(int16_vnni, "avx512f,avx512bw,avx512vnni", 32, int_operands(), _mm512_setzero_si512(),
        |p| _mm512_loadu_si512(p as *const __m512i),
        |p| _mm512_set1_epi32(*p),
        |a, w, x| _mm512_dpwssd_epi32(a, w, x),
        |a| _mm512_cvtsi512_si32(a) as i64);
    rate!(int8_vnni, "avx512f,avx512bw,avx512vnni", 64, int_operands(), _mm512_setzero_si512(),
        |p| _mm512_loadu_si512(p as *const __m512i),
        |p| _mm512_set1_epi32(*p),
        |a, w, x| _mm512_dpbusd_epi32(a, x, w),
        |a| _mm512_cvtsi512_si32(a) as i64);
}
