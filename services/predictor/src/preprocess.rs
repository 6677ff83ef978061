//! From the synapse's base64 image to the model's input tensor, as the SN34 base miner does it:
//! `ConvertToRGB → CenterCrop(min side) → Resize((h, w)) → ToTensor` (torchvision on PIL images),
//! then an optional per-channel normalization.
//!
//! The crop and the resize reproduce Pillow's integer code exactly (torchvision's `Resize` on a PIL
//! image is `Image.resize(…, BILINEAR)`: a separable, antialiased triangle filter with 22-bit
//! fixed-point coefficients, horizontal pass first, each pass rounded to `u8`), so on the same RGB
//! pixels the tensor is bit-identical to Python's. JPEG decoding is `zune-jpeg` (through `image`),
//! not libjpeg-turbo, so decoded pixels can differ by a little; the tests state how much.

use base64::Engine;

use crate::error::{Error, Result};

/// How images become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub height: u32,
    pub width: u32,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
}

/// An RGB image, 8 bits per channel, rows top to bottom.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// The largest image we decode (pixels): 4096 × 4096, above the 4K frames validators send. A
/// "JPEG" that claims more is refused from its header, before anything is allocated for it.
pub const MAX_PIXELS: u64 = 16 * 1024 * 1024;

/// The most the decoder may allocate for one image (bytes): RGBA with 16 bits a channel at
/// [`MAX_PIXELS`]. Bounds what a lying header or a decoder's own buffers can take.
const MAX_DECODER_ALLOC: u64 = MAX_PIXELS * 8;

impl Preprocess {
    /// Number of floats in one input (3 × h × w).
    pub fn len(&self) -> usize {
        3 * self.height as usize * self.width as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The synapse's `image` field (base64 of an encoded image) to a CHW tensor.
    pub fn from_base64(&self, b64: &str) -> Result<Vec<f32>> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim().as_bytes())
            .map_err(|e| Error::BadImage(format!("image is not base64: {e}")))?;
        self.from_encoded(&bytes)
    }

    /// Encoded image bytes (JPEG, PNG) to a CHW tensor.
    pub fn from_encoded(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        Ok(self.tensor(&self.resized(&decode(bytes)?)))
    }

    /// Center crop to the short side, then Pillow's bilinear resize to (height, width).
    pub fn resized(&self, img: &Rgb) -> Rgb {
        resize_bilinear(&center_crop_square(img), self.width, self.height)
    }

    /// `ToTensor` (÷255 in f32) and the optional normalization, channel-major.
    pub fn tensor(&self, img: &Rgb) -> Vec<f32> {
        let plane = img.width as usize * img.height as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in img.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut v = px[c] as f32 / 255.0;
                if let (Some(mean), Some(std)) = (&self.mean, &self.std) {
                    v = (v - mean[c]) / std[c];
                }
                out[c * plane + i] = v;
            }
        }
        out
    }
}

/// Decodes JPEG or PNG to RGB8 (grey expanded, alpha dropped, as PIL's `convert("RGB")`).
pub fn decode(bytes: &[u8]) -> Result<Rgb> {
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::BadImage(format!("cannot read image: {e}")))
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| Error::BadImage(format!("not a JPEG or PNG image: {e}")))?;
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(Error::BadImage(format!(
            "image is {w}x{h}; at most {MAX_PIXELS} pixels are decoded"
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    let mut decoder = reader()?;
    decoder.limits(limits);
    let img = decoder
        .decode()
        .map_err(|e| Error::BadImage(format!("cannot decode image: {e}")))?;
    let rgb = img.into_rgb8();
    Ok(Rgb {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

/// Python's `round()`: halves to even.
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// torchvision `center_crop(img, min(w, h))`: offsets `int(round((size - crop) / 2.0))`.
pub fn center_crop_square(img: &Rgb) -> Rgb {
    let side = img.width.min(img.height);
    let top = round_half_even(f64::from(img.height - side) / 2.0) as usize;
    let left = round_half_even(f64::from(img.width - side) / 2.0) as usize;
    let (w, s) = (img.width as usize, side as usize);
    let mut pixels = Vec::with_capacity(s * s * 3);
    for y in top..top + s {
        let row = (y * w + left) * 3;
        pixels.extend_from_slice(&img.pixels[row..row + s * 3]);
    }
    Rgb {
        width: side,
        height: side,
        pixels,
    }
}

/// Pillow's `PRECISION_BITS` for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow `precompute_coeffs` for the bilinear (triangle) filter, support 1, then
/// `normalize_coeffs_8bpc`: per output pixel the first input index, the count, and fixed-point
/// weights (`ksize` per pixel).
fn coefficients(in_size: u32, out_size: u32) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut kk = vec![0i32; out_size as usize * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            let w = if t.abs() < 1.0 { 1.0 - t.abs() } else { 0.0 };
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(xmax) {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    (bounds, kk, ksize)
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow `Image.resize((w, h), BILINEAR)` on an RGB image, bit for bit: horizontal pass over the
/// rows the vertical pass needs, then the vertical pass; each skipped when the size is unchanged.
pub fn resize_bilinear(img: &Rgb, out_w: u32, out_h: u32) -> Rgb {
    let (in_w, in_h) = (img.width as usize, img.height as usize);
    let need_h = out_w != img.width;
    let need_v = out_h != img.height;
    let (hb, hk, hks) = coefficients(img.width, out_w);
    let (mut vb, vk, vks) = coefficients(img.height, out_h);
    let init = 1i32 << (PRECISION_BITS - 1);

    // Horizontal pass, on rows first..last only.
    let (tmp, tmp_w, tmp_h) = if need_h {
        let first = vb[0].0;
        let last = vb[vb.len() - 1].0 + vb[vb.len() - 1].1;
        for b in &mut vb {
            b.0 -= first;
        }
        let rows = last - first;
        let ow = out_w as usize;
        let mut out = vec![0u8; ow * rows * 3];
        for y in 0..rows {
            let src = &img.pixels[(y + first) * in_w * 3..(y + first + 1) * in_w * 3];
            for (xx, &(xmin, xmax)) in hb.iter().enumerate() {
                let k = &hk[xx * hks..xx * hks + xmax];
                let (mut s0, mut s1, mut s2) = (init, init, init);
                for (x, &w) in k.iter().enumerate() {
                    let p = (x + xmin) * 3;
                    s0 += i32::from(src[p]) * w;
                    s1 += i32::from(src[p + 1]) * w;
                    s2 += i32::from(src[p + 2]) * w;
                }
                let o = (y * ow + xx) * 3;
                out[o] = clip8(s0);
                out[o + 1] = clip8(s1);
                out[o + 2] = clip8(s2);
            }
        }
        (out, ow, rows)
    } else {
        (img.pixels.clone(), in_w, in_h)
    };
    if !need_v {
        return Rgb {
            width: tmp_w as u32,
            height: tmp_h as u32,
            pixels: tmp,
        };
    }
    let oh = out_h as usize;
    let mut out = vec![0u8; tmp_w * oh * 3];
    for (yy, &(ymin, ymax)) in vb.iter().enumerate() {
        let k = &vk[yy * vks..yy * vks + ymax];
        for x in 0..tmp_w * 3 {
            let mut s = init;
            for (y, &w) in k.iter().enumerate() {
                s += i32::from(tmp[(y + ymin) * tmp_w * 3 + x]) * w;
            }
            out[yy * tmp_w * 3 + x] = clip8(s);
        }
    }
    Rgb {
        width: tmp_w as u32,
        height: out_h,
        pixels: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Rgb {
        let mut pixels = Vec::new();
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&[
                    (x * 7 % 256) as u8,
                    (y * 5 % 256) as u8,
                    ((x + y) % 256) as u8,
                ]);
            }
        }
        Rgb {
            width: w,
            height: h,
            pixels,
        }
    }

    #[test]
    fn python_rounding_of_crop_offsets() {
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(round_half_even(1.0), 1);
        // 10x5: crop 5x5 from left round(2.5) = 2.
        let c = center_crop_square(&gradient(10, 5));
        assert_eq!((c.width, c.height), (5, 5));
        assert_eq!(c.pixels[0], (2 * 7) as u8);
    }

    #[test]
    fn same_size_resize_is_identity_and_weights_sum_to_one() {
        let img = gradient(9, 9);
        assert_eq!(resize_bilinear(&img, 9, 9), img);
        let (bounds, kk, ksize) = coefficients(300, 224);
        for (i, (_, n)) in bounds.iter().enumerate() {
            let sum: i64 = kk[i * ksize..i * ksize + n]
                .iter()
                .map(|&v| i64::from(v))
                .sum();
            assert!((sum - (1 << PRECISION_BITS)).abs() <= *n as i64, "{sum}");
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let img = Rgb {
            width: 37,
            height: 23,
            pixels: vec![200; 37 * 23 * 3],
        };
        let out = resize_bilinear(&img, 16, 16);
        assert!(out.pixels.iter().all(|&p| p == 200));
    }

    #[test]
    fn tensors_are_channel_major_and_normalized() {
        let p = Preprocess {
            height: 1,
            width: 2,
            mean: Some([0.5; 3]),
            std: Some([0.5; 3]),
        };
        let img = Rgb {
            width: 2,
            height: 1,
            pixels: vec![255, 0, 0, 0, 255, 0],
        };
        assert_eq!(p.tensor(&img), vec![1.0, -1.0, -1.0, 1.0, -1.0, -1.0]);
    }
}
