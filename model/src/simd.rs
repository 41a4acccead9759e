//! Which SIMD code path the model's kernels take, and a way to force it.
//!
//! The model's own hot loops (depthwise convolutions in [`crate::depthwise`],
//! the pointwise epilogue in [`crate::pointwise`], MTCNN's layers and
//! resampling) and its matrix products are compiled for several SIMD levels
//! and the copy to run is picked at run time:
//!
//! | [`SimdLevel`] | CPU features needed | [`simd_path`] |
//! |---|---|---|
//! | [`SimdLevel::Avx512`] | x86_64 avx512f, avx512vl, avx2, fma | `"AVX-512"` |
//! | [`SimdLevel::Avx2Vnni`] | x86_64 avx2, fma, avxvnni | `"AVX2+AVX-VNNI"` |
//! | [`SimdLevel::Avx2Fma`] | x86_64 avx2, fma | `"AVX2+FMA"` |
//! | [`SimdLevel::Neon`] | aarch64 neon | `"NEON"` |
//! | [`SimdLevel::Baseline`] | none (the build's baseline, SSE2 on x86_64) | `"baseline (no SIMD dispatch)"` |
//!
//! # Forcing a path
//!
//! Set [`SIMD_ENV`] (`FACEFLEET_SIMD`) to `avx512`, `avxvnni`, `avx2`,
//! `neon` or `baseline` (`auto` or unset: the best the CPU has).
//! `AVX2+AVX-VNNI` runs the AVX2 code, except for the 16-bit integer
//! products ([`crate::int16`]), which take AVX-VNNI's `vpdpwssd` on 256
//! bits (Intel cores since Alder Lake, including those without AVX-512;
//! AMD Zen 5); `avx2` forces plain AVX2 on such a CPU too. It is read once, the
//! first time a kernel (or [`simd_level`]) asks. A level the CPU lacks is
//! never run: the best supported level not above it is taken instead, and
//! [`simd_summary`] says so. [`with_level`] forces a level for the calling
//! thread only (tests and benchmarks compare paths in one process with it).
//!
//! What the override reaches:
//!
//! * every loop of the model's own kernels, compiled per level by
//!   `simd_kernel!` (`#[target_feature]` copies of one
//!   body, dispatched here rather than by the `multiversion` crate, whose
//!   per-target copies cannot be called by name);
//! * the matrix products of MobileFaceNet (its 1x1 and stem convolutions) and
//!   of MTCNN, which call [`sgemm`]: it runs the `gemm` crate's AVX-512
//!   (`x86-v4`), AVX2+FMA or scalar kernels as the level says, through
//!   `gemm-common`'s public generic driver with `gemm-f32`'s microkernels.
//!
//! What it does not reach: anything that goes through candle's own ops.
//! candle calls `gemm::gemm`, which picks its kernels once per process from
//! `is_x86_feature_detected!` (an `AtomicPtr` private to `gemm-f32`; no
//! environment variable or public setter changes it, and std's feature
//! detection cannot be overridden at run time). That covers the dlib ResNet
//! recognizer (candle `conv2d`) and the generic (non-CPU) fallbacks. The only
//! way to take AVX-512 away from those is at build time: without the
//! workspace's `gemm` feature `x86-v4` the AVX-512 kernels are not compiled
//! in, and `gemm::gemm` uses AVX2+FMA.

use std::cell::Cell;
use std::sync::OnceLock;

/// Environment variable that forces the SIMD level: `avx512`, `avxvnni`,
/// `avx2`, `neon`, `baseline` or `auto`.
pub const SIMD_ENV: &str = "FACEFLEET_SIMD";

/// [`simd_path`] on the AVX-512 level.
pub const AVX512: &str = "AVX-512";
/// [`simd_path`] on the AVX2+AVX-VNNI level.
pub const AVX2_VNNI: &str = "AVX2+AVX-VNNI";
/// [`simd_path`] on the AVX2+FMA level.
pub const AVX2_FMA: &str = "AVX2+FMA";
/// [`simd_path`] on aarch64 (NEON).
pub const NEON: &str = "NEON";
/// [`simd_path`] when no SIMD level is used: the generic (scalar,
/// auto-vectorised for the build's baseline) code runs.
pub const BASELINE: &str = "baseline (no SIMD dispatch)";

/// Every name [`simd_path`] can return, fastest first.
pub const PATHS: [&str; 5] = [AVX512, AVX2_VNNI, AVX2_FMA, NEON, BASELINE];

/// A SIMD level the model's kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// x86_64 with avx512f, avx512vl, avx2 and fma: 16 f32 lanes.
    Avx512,
    /// x86_64 with avx2, fma and avxvnni: [`SimdLevel::Avx2Fma`]'s code,
    /// with AVX-VNNI's `vpdpwssd` for the 16-bit integer products.
    Avx2Vnni,
    /// x86_64 with avx2 and fma: 8 f32 lanes.
    Avx2Fma,
    /// aarch64 NEON: 4 f32 lanes.
    Neon,
    /// No dispatch: the build's baseline instruction set.
    Baseline,
}

impl SimdLevel {
    /// All levels, fastest first.
    pub const ALL: [SimdLevel; 5] = [SimdLevel::Avx512, SimdLevel::Avx2Vnni, SimdLevel::Avx2Fma, SimdLevel::Neon, SimdLevel::Baseline];

    /// The name [`simd_path`] reports for this level.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Avx512 => AVX512,
            SimdLevel::Avx2Vnni => AVX2_VNNI,
            SimdLevel::Avx2Fma => AVX2_FMA,
            SimdLevel::Neon => NEON,
            SimdLevel::Baseline => BASELINE,
        }
    }

    /// True when this CPU has every feature the level's code uses.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2Vnni => SimdLevel::Avx2Fma.is_supported() && std::arch::is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                SimdLevel::Avx2Fma.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Rank used to clamp a forced level to the CPU: baseline 0, AVX2 and
    /// NEON 1, AVX2+AVX-VNNI 2, AVX-512 3.
    fn rank(self) -> u8 {
        match self {
            SimdLevel::Baseline => 0,
            SimdLevel::Avx2Fma | SimdLevel::Neon => 1,
            SimdLevel::Avx2Vnni => 2,
            SimdLevel::Avx512 => 3,
        }
    }

    /// The best level this CPU supports whose rank is not above `self`'s:
    /// `self` when supported.
    pub fn clamp_to_cpu(self) -> SimdLevel {
        if self.is_supported() {
            return self;
        }
        SimdLevel::ALL
            .into_iter()
            .filter(|l| l.rank() <= self.rank() && l.is_supported())
            .max_by_key(|l| l.rank())
            .unwrap_or(SimdLevel::Baseline)
    }

    /// Parses a [`SIMD_ENV`] value (case-insensitive): `avx512` / `avx-512`,
    /// `avxvnni` / `avx-vnni` / `avx2+avx-vnni`, `avx2` / `avx2+fma`,
    /// `neon`, `baseline` / `scalar` / `none`. `auto` and the empty string
    /// give `Ok(None)` (detect).
    pub fn parse(s: &str) -> Result<Option<SimdLevel>, String> {
        let v = s.trim().to_ascii_lowercase();
        Ok(Some(match v.as_str() {
            "" | "auto" | "detect" => return Ok(None),
            "avx512" | "avx-512" | "avx512f" | "x86-v4" => SimdLevel::Avx512,
            "avxvnni" | "avx-vnni" | "avx2+avx-vnni" | "avx2+vnni" | "avx2vnni" => SimdLevel::Avx2Vnni,
            "avx2" | "avx2+fma" | "avx2fma" | "fma" | "x86-v3" => SimdLevel::Avx2Fma,
            "neon" => SimdLevel::Neon,
            "baseline" | "scalar" | "none" | "generic" => SimdLevel::Baseline,
            _ => {
                return Err(format!(
                    "unknown {SIMD_ENV} value {s:?} (expected avx512, avxvnni, avx2, neon, baseline or auto)"
                ))
            }
        }))
    }

    /// A level named as [`SimdLevel::parse`] reads it, to run on this CPU
    /// (benchmarks' `--levels`): `auto` is [`detected_level`]; a level the
    /// CPU cannot run is an error, never silently replaced.
    pub fn parse_runnable(s: &str) -> Result<SimdLevel, String> {
        match SimdLevel::parse(s)? {
            Some(l) if l.is_supported() => Ok(l),
            Some(l) => Err(format!("this CPU cannot run {l}")),
            None => Ok(detected_level()),
        }
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The best level this CPU supports (ignores [`SIMD_ENV`]).
pub fn detected_level() -> SimdLevel {
    SimdLevel::ALL.into_iter().find(|l| l.is_supported()).unwrap_or(SimdLevel::Baseline)
}

/// The process-wide choice: detection plus [`SIMD_ENV`].
#[derive(Debug, Clone)]
struct Selection {
    level: SimdLevel,
    detected: SimdLevel,
    /// The environment variable's value, when set and not `auto`.
    requested: Option<String>,
    /// Why the request was not followed as given.
    note: Option<String>,
}

fn select(env: Option<&str>) -> Selection {
    let detected = detected_level();
    let mut sel = Selection { level: detected, detected, requested: None, note: None };
    let Some(raw) = env else { return sel };
    match SimdLevel::parse(raw) {
        Ok(None) => {}
        Ok(Some(want)) => {
            sel.requested = Some(raw.to_string());
            sel.level = want.clamp_to_cpu();
            if sel.level != want {
                sel.note = Some(format!("this CPU cannot run {want}; using {}", sel.level));
            }
        }
        Err(e) => {
            sel.requested = Some(raw.to_string());
            sel.note = Some(format!("{e}; using {detected}"));
        }
    }
    sel
}

fn selection() -> &'static Selection {
    static SEL: OnceLock<Selection> = OnceLock::new();
    SEL.get_or_init(|| {
        let env = std::env::var(SIMD_ENV).ok();
        let sel = select(env.as_deref());
        if let Some(note) = &sel.note {
            tracing::warn!(env = SIMD_ENV, value = ?sel.requested, "{note}");
        }
        sel
    })
}

thread_local! {
    static THREAD_LEVEL: Cell<Option<SimdLevel>> = const { Cell::new(None) };
}

/// The level the model's kernels run at on this thread: the one set by
/// [`with_level`] if any, else the process-wide one (detected, or forced by
/// [`SIMD_ENV`], read once).
pub fn simd_level() -> SimdLevel {
    THREAD_LEVEL.with(|c| c.get()).unwrap_or_else(|| selection().level)
}

/// Runs `f` with the model's kernels forced to `level` on the calling thread
/// (clamped to what the CPU supports, see [`SimdLevel::clamp_to_cpu`]).
/// Kernels pick their level on the thread that calls into the model and hand
/// it to any worker threads they use, so the whole call runs at that level.
/// Returns `f`'s result; the previous setting is restored afterwards, also
/// on panic.
pub fn with_level<R>(level: SimdLevel, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<SimdLevel>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD_LEVEL.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(THREAD_LEVEL.with(|c| c.replace(Some(level.clamp_to_cpu()))));
    f()
}

/// The SIMD path the model's kernels take on this thread, as a name: one of
/// [`AVX512`] (`"AVX-512"`), [`AVX2_VNNI`] (`"AVX2+AVX-VNNI"`), [`AVX2_FMA`]
/// (`"AVX2+FMA"`), [`NEON`]
/// (`"NEON"`) or [`BASELINE`] (`"baseline (no SIMD dispatch)"`). Reports a
/// level forced by [`SIMD_ENV`] or [`with_level`].
pub fn simd_path() -> &'static str {
    simd_level().name()
}

/// One line for logs: the path taken, the CPU's best, whether it was forced,
/// and which matrix products follow it. E.g. `"AVX2+FMA (forced by
/// FACEFLEET_SIMD=avx2; CPU supports AVX-512; candle's own matmuls
/// (dlib ResNet) still use AVX-512)"`.
pub fn simd_summary() -> String {
    let sel = selection();
    let level = simd_level();
    let mut s = level.name().to_string();
    let mut notes = Vec::new();
    if let Some(req) = &sel.requested {
        notes.push(format!("forced by {SIMD_ENV}={req}"));
    } else if level != sel.detected {
        notes.push("forced for this thread".to_string());
    }
    if let Some(n) = &sel.note {
        notes.push(n.clone());
    }
    if level != sel.detected {
        notes.push(format!("CPU supports {}", sel.detected));
        notes.push(format!("candle's own matmuls (dlib ResNet) still use {}", candle_gemm_path()));
    }
    if !notes.is_empty() {
        s.push_str(&format!(" ({})", notes.join("; ")));
    }
    s
}

/// The kernels `gemm::gemm` (candle's matmul) picks on this CPU, whatever
/// [`SIMD_ENV`] says: AVX-512 when the CPU has avx512f (the workspace builds
/// `gemm` with `x86-v4`), else AVX2+FMA when it has fma, else scalar; NEON on
/// aarch64.
pub fn candle_gemm_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return AVX512;
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return AVX2_FMA;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return NEON;
        }
    }
    BASELINE
}

/// The CPU's model name as Linux reports it (`model name` in
/// `/proc/cpuinfo`), for labelling benchmark numbers; `"unknown <arch> CPU"`
/// where there is none (other systems, most aarch64 kernels).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// The SIMD features of this CPU that matter to the model, as detected at
/// run time, in a fixed order: on x86_64 any of `avx512f`, `avx512vl`,
/// `avx512vnni`, `avx2`, `fma`, `avxvnni`, `sse4.2`; on aarch64 `neon`. Empty on other
/// architectures or a CPU with none of them.
pub fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let all = [
            ("avx512f", has!("avx512f")),
            ("avx512vl", has!("avx512vl")),
            ("avx512vnni", has!("avx512vnni")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avxvnni", has!("avxvnni")),
            ("sse4.2", has!("sse4.2")),
        ];
        found.extend(all.into_iter().filter(|(_, on)| *on).map(|(name, _)| name));
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            found.push("neon");
        }
    }
    found
}

/// Compiles one kernel body once per [`SimdLevel`] and dispatches on a level
/// given as the first argument.
///
/// ```ignore
/// simd_kernel! {
///     /// Adds `b` to every value.
///     pub(crate) fn add_all(dst: &mut [f32], b: f32) {
///         for v in dst { *v += b; }
///     }
/// }
/// add_all(simd::simd_level(), &mut data, 1.0);
/// ```
///
/// The body is an `#[inline(always)]` function inlined into
/// `#[target_feature]` copies (AVX-512, AVX2+FMA on x86_64, the latter also
/// for AVX2+AVX-VNNI; NEON on aarch64),
/// so everything it calls inline is compiled for that level. Arguments are
/// plain `name: Type` pairs; no generics. Inside the body, the type `S`
/// ([`Isa`]) describes the level being compiled: use [`madd::<S>`](madd)
/// for multiply-adds (an FMA instruction where the level has one, `a * b + c`
/// otherwise: `f32::mul_add` would be a slow library call there) and
/// `S::LANES` for the natural vector width.
macro_rules! simd_kernel {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(level: $crate::simd::SimdLevel, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments, clippy::extra_unused_type_parameters)]
            fn body<S: $crate::simd::Isa>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                body::<$crate::simd::IsaAvx512>($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                body::<$crate::simd::IsaAvx2>($($arg),*)
            }

            #[cfg(target_arch = "aarch64")]
            #[target_feature(enable = "neon")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn neon($($arg: $ty),*) $(-> $ret)? {
                body::<$crate::simd::IsaNeon>($($arg),*)
            }

            match level {
                // SAFETY: a level is only ever handed out when the CPU has its
                // features (`SimdLevel::clamp_to_cpu`, `detected_level`).
                #[cfg(target_arch = "x86_64")]
                $crate::simd::SimdLevel::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::simd::SimdLevel::Avx2Fma | $crate::simd::SimdLevel::Avx2Vnni => unsafe { avx2($($arg),*) },
                #[cfg(target_arch = "aarch64")]
                $crate::simd::SimdLevel::Neon => unsafe { neon($($arg),*) },
                _ => body::<$crate::simd::IsaBaseline>($($arg),*),
            }
        }
    };
}
pub(crate) use simd_kernel;

/// What a [`simd_kernel!`] body knows about the level it is compiled for.
pub trait Isa {
    /// The level has a fused multiply-add instruction.
    const FMA: bool;
    /// f32 lanes of its widest vector register.
    const LANES: usize;
}

/// [`SimdLevel::Avx512`] for [`simd_kernel!`] bodies.
pub struct IsaAvx512;
/// [`SimdLevel::Avx2Fma`] and [`SimdLevel::Avx2Vnni`] for [`simd_kernel!`]
/// bodies.
pub struct IsaAvx2;
/// [`SimdLevel::Neon`] for [`simd_kernel!`] bodies.
pub struct IsaNeon;
/// [`SimdLevel::Baseline`] for [`simd_kernel!`] bodies.
pub struct IsaBaseline;

impl Isa for IsaAvx512 {
    const FMA: bool = true;
    const LANES: usize = 16;
}
impl Isa for IsaAvx2 {
    const FMA: bool = true;
    const LANES: usize = 8;
}
impl Isa for IsaNeon {
    const FMA: bool = true;
    const LANES: usize = 4;
}
impl Isa for IsaBaseline {
    // aarch64 always has FMA; x86_64's baseline (SSE2) does not.
    const FMA: bool = cfg!(target_arch = "aarch64");
    const LANES: usize = 4;
}

/// `a * b + c`: one fused multiply-add where `S` has it (then rounded once,
/// so results differ from the unfused form in the last bit).
#[inline(always)]
pub fn madd<S: Isa>(a: f32, b: f32, c: f32) -> f32 {
    if S::FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Thread count for the model's matrix products: rayon's (set it with
/// `RAYON_NUM_THREADS`; the app-tier workers run with 1).
pub fn gemm_parallelism() -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// `dst (m x n) = lhs (m x k) · rhs (k x n)` (or `dst += ...` with
/// `accumulate`), all row-major and contiguous, with the `gemm` crate's
/// kernels for `level`: AVX-512 (`x86-v4`), AVX2+FMA, or scalar on x86_64
/// (whatever `gemm::gemm` would pick is not consulted); `gemm::gemm`'s own
/// choice on other architectures.
///
/// Panics when a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    level: SimdLevel,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n, "sgemm: dst has {} values, needs {m}x{n}", dst.len());
    assert!(lhs.len() >= m * k, "sgemm: lhs has {} values, needs {m}x{k}", lhs.len());
    assert!(rhs.len() >= k * n, "sgemm: rhs has {} values, needs {k}x{n}", rhs.len());
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the three matrices are in bounds (checked above), row-major
    // with the strides given, and `dst` does not alias the inputs (a `&mut`).
    unsafe { sgemm_raw(level, m, n, k, dst.as_mut_ptr(), lhs.as_ptr(), rhs.as_ptr(), accumulate, parallelism) }
}

/// [`sgemm`] into `m * n` values at `dst` that need not be initialised:
/// every one of them is written (the product does not read `dst`).
///
/// # Safety
/// `dst` must be valid for writes of `m * n` `f32` values and not overlap
/// `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_into(
    level: SimdLevel,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    lhs: &[f32],
    rhs: &[f32],
    parallelism: gemm::Parallelism,
) {
    assert!(lhs.len() >= m * k && rhs.len() >= k * n, "sgemm_into: operands too short for {m}x{n}x{k}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        std::ptr::write_bytes(dst, 0, m * n);
        return;
    }
    sgemm_raw(level, m, n, k, dst, lhs.as_ptr(), rhs.as_ptr(), false, parallelism)
}

#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_raw(
    level: SimdLevel,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    lhs: *const f32,
    rhs: *const f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (alpha, beta) = (if accumulate { 1.0 } else { 0.0 }, 1.0);
    let (dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs) = (1, n as isize, 1, k as isize, 1, n as isize);
    #[cfg(target_arch = "x86_64")]
    {
        // gemm's microkernels store a column-major destination directly;
        // like `gemm::gemm`, hand them the row-major product transposed
        // (C^T = B^T A^T: the same memory, other strides).
        let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) =
            (n, m, dst_rs, dst_cs, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs);
        use gemm_common::gemm::gemm_basic_generic;
        use gemm_common::simd::MixedSimd;
        macro_rules! run {
            ($simd:ty, $ukr:path, $n:expr) => {{
                use $ukr as u;
                if let Some(simd) = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new() {
                    gemm_basic_generic::<_, f32, { $n }, { u::MR_DIV_N * $n }, { u::NR }, { u::MR_DIV_N }, { u::H_M }, { u::H_N }>(
                        simd, m, n, k, dst, dst_cs, dst_rs, accumulate, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
                        alpha, beta, false, false, false, |a, b, c| a * b + c, &u::UKR, &u::H_UKR, false,
                        parallelism,
                    );
                    return;
                }
            }};
        }
        match level {
            SimdLevel::Avx512 => run!(gemm_common::simd::V4, gemm_f32::microkernel::avx512f::f32, 16),
            SimdLevel::Avx2Fma | SimdLevel::Avx2Vnni => run!(gemm_common::simd::V3, gemm_f32::microkernel::fma::f32, 8),
            SimdLevel::Baseline => run!(gemm_common::simd::Scalar, gemm_f32::microkernel::scalar::f32, 1),
            SimdLevel::Neon => {}
        }
    }
    let _ = level;
    gemm::gemm(
        m, n, k, dst, dst_cs, dst_rs, accumulate, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, alpha, beta, false, false,
        false, parallelism,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_path_is_one_of_the_names() {
        let p = simd_path();
        assert!(PATHS.contains(&p), "unexpected SIMD path {p:?}");
    }

    #[test]
    fn detected_level_agrees_with_the_features() {
        let f = cpu_features();
        let has = |n: &str| f.contains(&n);
        let expected = if has("avx512f") && has("avx512vl") && has("avx2") && has("fma") {
            SimdLevel::Avx512
        } else if has("avx2") && has("fma") && has("avxvnni") {
            SimdLevel::Avx2Vnni
        } else if has("avx2") && has("fma") {
            SimdLevel::Avx2Fma
        } else if has("neon") {
            SimdLevel::Neon
        } else {
            SimdLevel::Baseline
        };
        assert_eq!(detected_level(), expected, "features: {f:?}");
    }

    #[test]
    fn parses_the_env_values() {
        assert_eq!(SimdLevel::parse("AVX2"), Ok(Some(SimdLevel::Avx2Fma)));
        assert_eq!(SimdLevel::parse("avx-512"), Ok(Some(SimdLevel::Avx512)));
        assert_eq!(SimdLevel::parse(" baseline "), Ok(Some(SimdLevel::Baseline)));
        assert_eq!(SimdLevel::parse("neon"), Ok(Some(SimdLevel::Neon)));
        assert_eq!(SimdLevel::parse("AVX-VNNI"), Ok(Some(SimdLevel::Avx2Vnni)));
        assert_eq!(SimdLevel::parse("avxvnni"), Ok(Some(SimdLevel::Avx2Vnni)));
        assert_eq!(SimdLevel::parse("auto"), Ok(None));
        assert_eq!(SimdLevel::parse(""), Ok(None));
        assert!(SimdLevel::parse("sse9").is_err());
        assert_eq!(SimdLevel::parse_runnable("auto"), Ok(detected_level()));
        assert_eq!(SimdLevel::parse_runnable("baseline"), Ok(SimdLevel::Baseline));
        for (name, l) in
            [("avx512", SimdLevel::Avx512), ("avxvnni", SimdLevel::Avx2Vnni), ("avx2", SimdLevel::Avx2Fma), ("neon", SimdLevel::Neon)]
        {
            assert_eq!(SimdLevel::parse_runnable(name).ok(), l.is_supported().then_some(l), "{name}");
        }
        assert!(SimdLevel::parse_runnable("sse9").is_err());
    }

    #[test]
    fn a_forced_level_is_clamped_to_the_cpu() {
        let detected = detected_level();
        for want in SimdLevel::ALL {
            let got = want.clamp_to_cpu();
            assert!(got.is_supported());
            if want.is_supported() {
                assert_eq!(got, want);
            } else {
                assert!(got.rank() <= want.rank());
            }
        }
        let sel = select(Some("baseline"));
        assert_eq!((sel.level, sel.detected), (SimdLevel::Baseline, detected));
        let sel = select(Some("avx512"));
        assert_eq!(sel.level, SimdLevel::Avx512.clamp_to_cpu());
        assert_eq!(sel.note.is_some(), !SimdLevel::Avx512.is_supported());
        let sel = select(Some("bogus"));
        assert_eq!(sel.level, detected);
        assert!(sel.note.is_some());
        assert_eq!(select(None).level, detected);
    }

    #[test]
    fn with_level_is_reported_and_restored() {
        let before = simd_path();
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            with_level(level, || {
                assert_eq!(simd_level(), level);
                assert_eq!(simd_path(), level.name());
                // Nested: the inner one wins, then the outer one is back.
                with_level(SimdLevel::Baseline, || assert_eq!(simd_path(), BASELINE));
                assert_eq!(simd_path(), level.name());
            });
        }
        assert_eq!(simd_path(), before);
    }

    /// Spawned by [`the_env_variable_forces_the_path`] with `FACEFLEET_SIMD`
    /// set; passes trivially in a normal run.
    #[test]
    fn child_reports_the_forced_path() {
        let Ok(want) = std::env::var("FACEFLEET_SIMD_TEST_EXPECT") else { return };
        assert_eq!(simd_path(), want);
        assert!(simd_summary().contains(SIMD_ENV), "{}", simd_summary());
    }

    /// Runs this test binary again with `FACEFLEET_SIMD` set (the variable is
    /// read once per process). Under an emulator (`scripts/test-aarch64`:
    /// qemu-user, no binfmt_misc) the binary cannot be executed directly:
    /// `FACEFLEET_TEST_RUNNER` (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`,
    /// split on whitespace) is then put in front of it.
    #[test]
    fn the_env_variable_forces_the_path() {
        let exe = std::env::current_exe().unwrap();
        let runner = std::env::var("FACEFLEET_TEST_RUNNER").unwrap_or_default();
        let runner: Vec<&str> = runner.split_whitespace().collect();
        let levels = [
            ("avx2", SimdLevel::Avx2Fma),
            ("avxvnni", SimdLevel::Avx2Vnni),
            ("baseline", SimdLevel::Baseline),
            ("avx512", SimdLevel::Avx512),
            ("neon", SimdLevel::Neon),
        ];
        for (value, level) in levels {
            let mut cmd = match runner.split_first() {
                Some((prog, args)) => {
                    let mut c = std::process::Command::new(prog);
                    c.args(args).arg(&exe);
                    c
                }
                None => std::process::Command::new(&exe),
            };
            let out = cmd
                .args(["--exact", "simd::tests::child_reports_the_forced_path", "--test-threads=1"])
                .env(SIMD_ENV, value)
                .env("FACEFLEET_SIMD_TEST_EXPECT", level.clamp_to_cpu().name())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{value}: child {} exited with {} (under an emulator, set FACEFLEET_TEST_RUNNER):\n{text}\n{}",
                exe.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn aarch64_detects_neon() {
        assert_eq!(cpu_features(), ["neon"]);
        assert_eq!(detected_level(), SimdLevel::Neon);
        assert_eq!(candle_gemm_path(), NEON);
        // The x86 levels are clamped to NEON (AVX2's rank), never run.
        assert_eq!(SimdLevel::Avx512.clamp_to_cpu(), SimdLevel::Neon);
        assert_eq!(SimdLevel::Avx2Vnni.clamp_to_cpu(), SimdLevel::Neon);
        assert_eq!(SimdLevel::Avx2Fma.clamp_to_cpu(), SimdLevel::Neon);
    }

    simd_kernel! {
        fn sum_squares(v: &[f32]) -> f32 {
            v.iter().map(|x| x * x).sum()
        }
    }

    #[test]
    fn kernels_agree_across_levels() {
        let v: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let want: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            let got = sum_squares(level, &v);
            assert!((got as f64 - want).abs() < 1e-3, "{level}: {got} vs {want}");
        }
    }

    #[test]
    fn sgemm_agrees_across_levels() {
        for &(m, n, k) in &[(1, 1, 1), (7, 13, 5), (64, 30, 27), (100, 6, 32), (3, 200, 17)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0).collect();
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                }
            }
            for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
                let mut c = vec![f32::NAN; m * n];
                sgemm(level, m, n, k, &mut c, &a, &b, false, gemm::Parallelism::None);
                let mut acc = vec![1f32; m * n];
                sgemm(level, m, n, k, &mut acc, &a, &b, true, gemm::Parallelism::None);
                for i in 0..m * n {
                    assert!((c[i] as f64 - want[i]).abs() < 1e-4, "{level} {m}x{n}x{k}: {} vs {}", c[i], want[i]);
                    assert!((acc[i] as f64 - want[i] - 1.0).abs() < 1e-4, "{level} accumulate");
                }
            }
        }
    }
}
