//! The payment URI a payer's wallet scans, and its QR code as SVG and PNG.
//!
//! `cbdc:<settlement address>?amount=12.30&memo=order:<merchant_id>:<out_trade_no>&network=<name>`
//! — the wallet pays the amount to the address with the memo, which names the order.

use qrcode::{EcLevel, QrCode};

use crate::error::ApiError;

/// Pixels per QR module in the PNG, and modules of quiet zone around it.
const PNG_SCALE: usize = 8;
const QUIET: usize = 4;

/// The memo a payment of this order carries.
pub fn order_memo(merchant_id: &str, out_trade_no: &str) -> String {
    format!("order:{merchant_id}:{out_trade_no}")
}

/// The `cbdc:` URI of a payment (ids and the address hold no characters that need escaping).
pub fn payment_uri(address: &str, amount: &str, memo: &str, network: &str) -> String {
    format!("cbdc:{address}?amount={amount}&memo={memo}&network={network}")
}

fn code(uri: &str) -> Result<QrCode, ApiError> {
    QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| ApiError::internal(format!("QR code: {e}")))
}

/// The QR code of `uri` as an SVG document.
pub fn svg(uri: &str) -> Result<String, ApiError> {
    Ok(code(uri)?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The QR code of `uri` as a greyscale PNG.
pub fn png(uri: &str) -> Result<Vec<u8>, ApiError> {
    let code = code(uri)?;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for y in 0..width {
        for x in 0..width {
            if colors[y * width + x] == qrcode::Color::Dark {
                for dy in 0..PNG_SCALE {
                    let row = (y + QUIET) * PNG_SCALE + dy;
                    let start = row * side + (x + QUIET) * PNG_SCALE;
                    pixels[start..start + PNG_SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| ApiError::internal(format!("PNG: {e}")))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| ApiError::internal(format!("PNG: {e}")))?;
    }
    Ok(out)
}
