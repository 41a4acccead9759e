//! 1x1 ("pointwise") convolution with bias, optional PReLU and optional
//! residual add fused into one CPU kernel.
//!
//! MobileFaceNet spends most of its arithmetic in 1x1 convolutions. Done as
//! candle ops they cost a matmul, a copy for the bias/PReLU pass and another
//! allocation for the residual add; here one `gemm` call writes the output
//! buffer and a single in-place pass adds the bias, the PReLU and the
//! shortcut. With one thread (`RAYON_NUM_THREADS=1`, as the app-tier workers
//! run) no work is handed to the rayon pool at all. Other devices fall back
//! to candle's ops, so the `cuda` feature keeps working.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::depthwise::{contiguous_f32 as slice, dot};
use crate::int16::{Epilogue, Int16Weights};
use crate::simd::{gemm_parallelism, sgemm_into, simd_kernel, simd_level};

const INPUT: &str = "pointwise conv: input";
const WEIGHT: &str = "pointwise conv: weight";

/// A 1x1, stride-1 convolution over NCHW tensors: `y = W x + b`, then an
/// optional per-channel PReLU, then an optional residual `+ x0`.
#[derive(Debug, Clone)]
pub struct Pointwise {
    /// `[O, I]`.
    weight: Tensor,
    /// Bias, `[O]`.
    bias: Vec<f32>,
    /// PReLU slopes, `[O]`.
    alpha: Option<Vec<f32>>,
    /// `[1 | 2, O]`: bias, then the slopes (the generic path's input).
    params: Tensor,
    /// The weights as 16-bit integers, for the AVX-512 level on CPUs with
    /// VNNI and for the AVX2 level (see [`crate::int16`]).
    int16: Option<Int16Weights>,
}

impl Pointwise {
    /// Builds the layer from a `[O, I]` (or `[O, I, 1, 1]`) weight, a `[O]`
    /// bias and optional `[O]` PReLU slopes.
    pub fn new(weight: &Tensor, bias: &Tensor, alpha: Option<&Tensor>) -> Result<Self> {
        let cout = weight.dim(0)?;
        let weight = weight
            .to_dtype(DType::F32)?
            .reshape((cout, ()))?
            .contiguous()?;
        let bias_t = bias.to_dtype(DType::F32)?;
        let bias = bias_t.to_vec1::<f32>()?;
        let alpha_t = alpha.map(|a| a.to_dtype(DType::F32)).transpose()?;
        if bias.len() != cout
            || alpha_t
                .as_ref()
                .map(|a| a.dims1())
                .transpose()?
                .is_some_and(|n| n != cout)
        {
            candle_core::bail!(
                "pointwise conv: weight {:?} but bias {:?}",
                weight.shape(),
                bias_t.shape()
            );
        }
        let params = match &alpha_t {
            Some(a) => Tensor::stack(&[&bias_t, a], 0)?,
            None => bias_t.unsqueeze(0)?,
        };
        let alpha = alpha_t.map(|a| a.to_vec1::<f32>()).transpose()?;
        let int16 = if cfg!(target_arch = "x86_64") && weight.device().is_cpu() {
            Int16Weights::new(&weight.flatten_all()?.to_vec1::<f32>()?, cout, weight.dim(1)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            alpha,
            params,
            int16,
        })
    }

    /// Applies the layer to `x` `[N, I, H, W]`, adding `residual`
    /// (`[N, O, H, W]`) at the end if given.
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = PointwiseOp {
                bias: &self.bias,
                alpha: self.alpha.as_deref(),
                int16: self.int16.as_ref(),
            };
            let x = x.contiguous()?;
            return match residual {
                Some(r) => x.apply_op3_no_bwd(&self.weight, &r.contiguous()?, &op),
                None => x.apply_op2_no_bwd(&self.weight, &op),
            };
        }
        let (n, c, h, w) = x.dims4()?;
        let cout = self.weight.dim(0)?;
        let w2 = self.weight.to_dtype(x.dtype())?;
        let x3 = x.reshape((n, c, h * w))?;
        let ys = (0..n)
            .map(|i| w2.matmul(&x3.get(i)?))
            .collect::<Result<Vec<_>>>()?;
        let y = Tensor::stack(&ys, 0)?.reshape((n, cout, h, w))?;
        let y = crate::depthwise::bias_prelu(&y, &self.params)?;
        match residual {
            Some(r) => y + r,
            None => Ok(y),
        }
    }
}

simd_kernel! {
/// Adds the bias, applies the PReLU and adds the residual, in place, over
/// `dst` (`bias.len()` rows of `plane` values).
fn epilogue(
    dst: &mut [f32],
    plane: usize,
    bias: &[f32],
    alpha: Option<&[f32]>,
    residual: Option<&[f32]>,
) {
    for (co, row) in dst.chunks_exact_mut(plane).enumerate() {
        let b = bias[co];
        match alpha {
            Some(a) => {
                let a = a[co];
                for v in row.iter_mut() {
                    let t = *v + b;
                    // Branch-free; equals `t < 0 ? a * t : t`.
                    *v = t.max(0.0) + a * t.min(0.0);
                }
            }
            None => row.iter_mut().for_each(|v| *v += b),
        }
        if let Some(r) = residual {
            for (v, r) in row.iter_mut().zip(&r[co * plane..(co + 1) * plane]) {
                *v += r;
            }
        }
    }
}
}

simd_kernel! {
/// `out[i][o] = w[o] . x[i]` for the `cin`-long rows `w[o]` of the
/// weights and `x[i]` of the samples: each weight row is read once, for
/// every sample in turn. The same sums on every level ([`dot`]'s order).
fn matvec_rows(w: &[f32], x: &[f32], cin: usize, out: &mut [f32]) {
    let cout = w.len() / cin;
    for (o, row) in w.chunks_exact(cin).enumerate() {
        for (i, sample) in x.chunks_exact(cin).enumerate() {
            out[i * cout + o] = dot::<S>(row, sample);
        }
    }
}
}

struct PointwiseOp<'a> {
    bias: &'a [f32],
    alpha: Option<&'a [f32]>,
    int16: Option<&'a Int16Weights>,
}

impl PointwiseOp<'_> {
    fn run(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        residual: Option<(&[f32], &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cin, h, wd) = xl.shape().dims4()?;
        let (cout, wcin) = wl.shape().dims2()?;
        if wcin != cin || self.bias.len() != cout {
            candle_core::bail!("pointwise conv: input has {cin} channels, weight is {cout}x{wcin}");
        }
        let shape = Shape::from((n, cout, h, wd));
        let plane = h * wd;
        if let Some((_, rl)) = residual {
            if rl.shape() != &shape {
                candle_core::bail!(
                    "pointwise conv: residual {:?} does not match output {shape:?}",
                    rl.shape()
                );
            }
        }
        let level = simd_level();
        if plane == 1 && cin > 0 {
            // One pixel per sample (MobileFaceNet's last two layers): a
            // matrix-vector product per sample, each weight row read once
            // for all samples. A general product packed the weights (1 MB
            // for 512 x 512) again for every sample.
            let mut out = vec![0f32; n * cout];
            matvec_rows(level, w, x, cin, &mut out);
            for (i, dst) in out.chunks_exact_mut(cout).enumerate() {
                epilogue(level, dst, 1, self.bias, self.alpha, residual.map(|(r, _)| &r[i * cout..(i + 1) * cout]));
            }
            return Ok((CpuStorage::F32(out), shape));
        }
        let parallelism = gemm_parallelism();
        let size = cout * plane;
        // Not zeroed: the matrix product writes every value first.
        let mut out: Vec<f32> = Vec::with_capacity(n * size);
        // 16-bit integers where `level` has a kernel (see `crate::int16`).
        let int16 = self.int16.filter(|_| Int16Weights::runs_here(level, plane));
        for i in 0..n {
            let src = &x[i * cin * plane..(i + 1) * cin * plane];
            let res = residual.map(|(r, _)| &r[i * size..(i + 1) * size]);
            if let Some(q) = int16 {
                let e = Epilogue { bias: self.bias, alpha: self.alpha, residual: res };
                // SAFETY: sample i's `size` values lie in the capacity, apart
                // from the inputs; `true` means all of them were written.
                if unsafe { q.forward_into(level, src, plane, out.as_mut_ptr().add(i * size), &e) } {
                    continue;
                }
            }
            // SAFETY: sample i's `size` values lie in the capacity; `sgemm_into`
            // initialises all of them before the slice over them is made.
            let dst = unsafe {
                let at = out.as_mut_ptr().add(i * size);
                sgemm_into(level, cout, plane, cin, at, w, src, parallelism);
                std::slice::from_raw_parts_mut(at, size)
            };
            epilogue(level, dst, plane, self.bias, self.alpha, res);
        }
        // SAFETY: all n samples were written above.
        unsafe { out.set_len(n * size) };
        Ok((CpuStorage::F32(out), shape))
    }
}

impl CustomOp2 for PointwiseOp<'_> {
    fn name(&self) -> &'static str {
        "facefleet-pointwise-conv"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(slice(s1, l1, INPUT)?, l1, slice(s2, l2, WEIGHT)?, l2, None)
    }
}

impl CustomOp3 for PointwiseOp<'_> {
    fn name(&self) -> &'static str {
        "facefleet-pointwise-conv-residual"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let r = slice(s3, l3, "pointwise conv: residual")?;
        self.run(slice(s1, l1, INPUT)?, l1, slice(s2, l2, WEIGHT)?, l2, Some((r, l3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn matches_conv2d_with_bias_prelu_and_residual() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, cin, cout, h, w, prelu, residual) in &[
            (1, 8, 16, 7, 5, true, false),
            (3, 16, 16, 4, 4, false, true),
            (2, 5, 3, 1, 1, true, true),
            (1, 64, 128, 9, 7, true, false),
            // One pixel: the matrix-vector path, with and without a tail.
            (3, 512, 40, 1, 1, false, true),
            (2, 37, 9, 1, 1, true, false),
        ] {
            let x = Tensor::randn(0f32, 1., (n, cin, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1., (cout, cin, 1, 1), &dev)?;
            let b = Tensor::randn(0f32, 1., cout, &dev)?;
            let a = Tensor::randn(0f32, 1., cout, &dev)?;
            let r = Tensor::randn(0f32, 1., (n, cout, h, w), &dev)?;
            let layer = Pointwise::new(&wt, &b, prelu.then_some(&a))?;
            for level in crate::simd::SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            let got = crate::simd::with_level(level, || layer.forward(&x, residual.then_some(&r)))?;
            let mut want = x
                .conv2d(&wt, 0, 1, 1, 1)?
                .broadcast_add(&b.reshape((1, cout, 1, 1))?)?;
            if prelu {
                want = crate::depthwise::prelu(&want, &a)?;
            }
            if residual {
                want = (want + &r)?;
            }
            assert_eq!(got.dims(), want.dims());
            let d = max_diff(&got, &want);
            // The integer product rounds weights and inputs (`crate::int16`).
            let tol = if Int16Weights::runs_here(level, h * w) {
                2e-3 * want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?
            } else {
                1e-4
            };
            assert!(
                d < tol,
                "{level}: max diff {d} for {:?}",
                (n, cin, cout, h, w, prelu, residual)
            );
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_mismatched_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let layer = Pointwise::new(
            &Tensor::zeros((4, 3), DType::F32, &dev)?,
            &Tensor::zeros(4, DType::F32, &dev)?,
            None,
        )?;
        assert!(layer
            .forward(&Tensor::zeros((1, 2, 3, 3), DType::F32, &dev)?, None)
            .is_err());
        let bad_residual = Tensor::zeros((1, 4, 2, 2), DType::F32, &dev)?;
        assert!(layer
            .forward(
                &Tensor::zeros((1, 3, 3, 3), DType::F32, &dev)?,
                Some(&bad_residual)
            )
            .is_err());
        Ok(())
    }
}
