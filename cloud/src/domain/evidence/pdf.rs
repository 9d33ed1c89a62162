//! `summary.pdf`: what an auditor reads first. A4, Helvetica (a PDF base-14 font: nothing
//! embedded), laid out here: paragraphs wrap by the font's metrics, tables wrap their cells and
//! repeat their header on each page, and the availability chart is drawn as vector paths with
//! days without data left as gaps, never drawn as up.

use chrono::{Datelike, NaiveDate};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use stayopen_shared::compliance::{AvailabilityDay, DrillOutcome};

use super::package::HIPAA_MAPPING;
use super::{EvidenceInput, period_label};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 50.0;
const TOP: f32 = PAGE_H - 56.0;
const BOTTOM: f32 = 60.0;
const TEXT_W: f32 = PAGE_W - 2.0 * MARGIN;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

type Rgb = (f32, f32, f32);
/// A chart series: its legend, colour and the day's figure it plots.
type Series = (&'static str, Rgb, fn(&AvailabilityDay) -> Option<f64>);
const BLACK: Rgb = (0.0, 0.0, 0.0);
const GREY: Rgb = (0.4, 0.4, 0.4);
const RED: Rgb = (0.75, 0.1, 0.1);
const GREEN: Rgb = (0.1, 0.5, 0.2);
const BLUE: Rgb = (0.12, 0.35, 0.75);
const ORANGE: Rgb = (0.9, 0.5, 0.1);

/// Helvetica's advance widths (per 1000 units) for ASCII 32–126, from Adobe's AFM.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Helvetica-Bold's advance widths for ASCII 32–126.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
];

/// `c` in WinAnsiEncoding, the font's encoding; characters it lacks become `?`.
fn win_ansi(c: char) -> u8 {
    match c {
        ' '..='~' => c as u8,
        '\u{a0}'..='\u{ff}' => c as u32 as u8,
        '€' => 0x80,
        '…' => 0x85,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '\t' | '\n' | '\r' => b' ',
        _ => b'?',
    }
}

fn char_width(c: char, bold: bool) -> f32 {
    let table = if bold { &HELVETICA_BOLD } else { &HELVETICA };
    let code = win_ansi(c);
    let units = if (32..=126).contains(&code) {
        table[usize::from(code - 32)]
    } else if code == 0x97 {
        1000
    } else {
        556
    };
    f32::from(units) / 1000.0
}

fn text_width(text: &str, size: f32, bold: bool) -> f32 {
    text.chars().map(|c| char_width(c, bold)).sum::<f32>() * size
}

/// Greedy line breaking at spaces; a word wider than the line is cut.
fn wrap(text: &str, size: f32, bold: bool, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_owned()
            } else {
                format!("{line} {word}")
            };
            if text_width(&candidate, size, bold) <= width {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            // The word alone: cut it if it is wider than the line.
            let mut piece = String::new();
            for c in word.chars() {
                piece.push(c);
                if text_width(&piece, size, bold) > width && piece.chars().count() > 1 {
                    piece.pop();
                    lines.push(std::mem::take(&mut piece));
                    piece.push(c);
                }
            }
            line = piece;
        }
        lines.push(line);
    }
    lines
}

/// Pages being laid out, top to bottom.
struct Layout {
    pages: Vec<Content>,
    y: f32,
}

impl Layout {
    fn new() -> Self {
        Self {
            pages: vec![Content::new()],
            y: TOP,
        }
    }

    fn page(&mut self) -> &mut Content {
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn new_page(&mut self) {
        self.pages.push(Content::new());
        self.y = TOP;
    }

    /// Starts a new page unless `height` still fits on this one.
    fn ensure(&mut self, height: f32) {
        if self.y - height < BOTTOM {
            self.new_page();
        }
    }

    fn text_at(&mut self, x: f32, y: f32, size: f32, bold: bool, color: Rgb, text: &str) {
        let bytes: Vec<u8> = text.chars().map(win_ansi).collect();
        let content = self.page();
        content.set_fill_rgb(color.0, color.1, color.2);
        content.begin_text();
        content.set_font(if bold { BOLD } else { REGULAR }, size);
        content.next_line(x, y);
        content.show(Str(&bytes));
        content.end_text();
    }

    fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, color: Rgb) {
        let content = self.page();
        content.set_fill_rgb(color.0, color.1, color.2);
        content.rect(x, y, w, h);
        content.fill_nonzero();
    }

    fn line(&mut self, from: (f32, f32), to: (f32, f32), width: f32, color: Rgb) {
        let content = self.page();
        content.set_stroke_rgb(color.0, color.1, color.2);
        content.set_line_width(width);
        content.move_to(from.0, from.1);
        content.line_to(to.0, to.1);
        content.stroke();
    }

    fn space(&mut self, points: f32) {
        self.y -= points;
    }

    fn heading(&mut self, text: &str) {
        self.ensure(60.0);
        self.space(10.0);
        self.text_at(MARGIN, self.y - 16.0, 16.0, true, BLACK, text);
        self.y -= 22.0;
        self.line(
            (MARGIN, self.y),
            (PAGE_W - MARGIN, self.y),
            0.8,
            (0.7, 0.7, 0.7),
        );
        self.space(8.0);
    }

    fn subheading(&mut self, text: &str) {
        self.ensure(40.0);
        self.space(4.0);
        self.paragraph_styled(text, 11.5, true, BLACK);
        self.space(2.0);
    }

    fn paragraph(&mut self, text: &str) {
        self.paragraph_styled(text, 10.0, false, BLACK);
    }

    fn paragraph_styled(&mut self, text: &str, size: f32, bold: bool, color: Rgb) {
        self.indented(0.0, text, size, bold, color);
    }

    fn indented(&mut self, indent: f32, text: &str, size: f32, bold: bool, color: Rgb) {
        let leading = size * 1.3;
        for line in wrap(text, size, bold, TEXT_W - indent) {
            self.ensure(leading);
            self.text_at(MARGIN + indent, self.y - size, size, bold, color, &line);
            self.y -= leading;
        }
        self.space(size * 0.4);
    }

    /// A label and its value on one line (the value wraps under itself).
    fn field(&mut self, label: &str, value: &str) {
        let size = 10.0;
        let label_w = 130.0;
        let lines = wrap(value, size, false, TEXT_W - label_w);
        for (i, line) in lines.iter().enumerate() {
            self.ensure(size * 1.35);
            if i == 0 {
                self.text_at(MARGIN, self.y - size, size, true, BLACK, label);
            }
            self.text_at(MARGIN + label_w, self.y - size, size, false, BLACK, line);
            self.y -= size * 1.35;
        }
    }

    /// A table: `columns` are (title, share of the text width); cells wrap; the header repeats on
    /// every page the table runs onto. `colors` optionally colours a row's text.
    fn table(&mut self, columns: &[(&str, f32)], rows: &[Vec<String>], colors: &[Rgb]) {
        let size = 8.5;
        let leading = size * 1.25;
        let pad = 3.0;
        let total: f32 = columns.iter().map(|c| c.1).sum();
        let widths: Vec<f32> = columns.iter().map(|c| c.1 / total * TEXT_W).collect();
        let header: Vec<Vec<String>> = columns
            .iter()
            .zip(&widths)
            .map(|((title, _), w)| wrap(title, size, true, w - 2.0 * pad))
            .collect();
        let header_h = header.iter().map(Vec::len).max().unwrap_or(1) as f32 * leading + 2.0 * pad;
        let draw_header = |layout: &mut Layout| {
            layout.fill_rect(
                MARGIN,
                layout.y - header_h,
                TEXT_W,
                header_h,
                (0.88, 0.9, 0.94),
            );
            let mut x = MARGIN;
            for (lines, w) in header.iter().zip(&widths) {
                for (i, line) in lines.iter().enumerate() {
                    layout.text_at(
                        x + pad,
                        layout.y - pad - size - i as f32 * leading,
                        size,
                        true,
                        BLACK,
                        line,
                    );
                }
                x += w;
            }
            layout.y -= header_h;
        };
        self.ensure(header_h + leading + 2.0 * pad);
        draw_header(self);
        for (r, row) in rows.iter().enumerate() {
            let cells: Vec<Vec<String>> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| wrap(cell, size, false, w - 2.0 * pad))
                .collect();
            let row_h = cells.iter().map(Vec::len).max().unwrap_or(1) as f32 * leading + 2.0 * pad;
            if self.y - row_h < BOTTOM {
                self.new_page();
                draw_header(self);
            }
            if r % 2 == 1 {
                self.fill_rect(MARGIN, self.y - row_h, TEXT_W, row_h, (0.96, 0.96, 0.97));
            }
            let color = colors.get(r).copied().unwrap_or(BLACK);
            let mut x = MARGIN;
            for (lines, w) in cells.iter().zip(&widths) {
                for (i, line) in lines.iter().enumerate() {
                    self.text_at(
                        x + pad,
                        self.y - pad - size - i as f32 * leading,
                        size,
                        false,
                        color,
                        line,
                    );
                }
                x += w;
            }
            self.y -= row_h;
        }
        self.line(
            (MARGIN, self.y),
            (PAGE_W - MARGIN, self.y),
            0.5,
            (0.7, 0.7, 0.7),
        );
        self.space(10.0);
    }

    /// Daily availability as two lines (primary and effective) over the whole period; a day
    /// without data breaks the lines and is shaded and marked as a gap.
    fn availability_chart(&mut self, from: NaiveDate, to: NaiveDate, days: &[&AvailabilityDay]) {
        let height = 190.0;
        let plot_h = 140.0;
        let label_w = 36.0;
        self.ensure(height + 30.0);
        let top = self.y - 6.0;
        let (x0, y0) = (MARGIN + label_w, top - plot_h);
        let plot_w = TEXT_W - label_w;
        let span = (to - from).num_days().max(0) as f32 + 1.0;
        let day_w = plot_w / span;
        let values = days
            .iter()
            .flat_map(|d| [d.primary_pct, d.effective_pct])
            .flatten();
        let lowest = values.fold(100.0f64, f64::min);
        // The scale starts at a round figure below the worst day, so 99.9 % and 100 % do not
        // look alike, and never above 99 %.
        let low = if lowest >= 99.0 {
            99.0
        } else if lowest >= 95.0 {
            95.0
        } else if lowest >= 90.0 {
            90.0
        } else {
            (lowest / 10.0).floor() * 10.0
        } as f32;
        let y_of = |pct: f64| y0 + ((pct as f32 - low) / (100.0 - low)).clamp(0.0, 1.0) * plot_h;
        let x_of = |date: NaiveDate| x0 + ((date - from).num_days() as f32 + 0.5) * day_w;

        // Gaps first, under everything: days with no report at all, and days absent from the data.
        let by_date: std::collections::HashMap<NaiveDate, &AvailabilityDay> =
            days.iter().map(|d| (d.date, *d)).collect();
        let mut date = from;
        let mut gap_days = 0;
        while date <= to {
            let missing = by_date.get(&date).is_none_or(|d| d.effective_pct.is_none());
            if missing {
                gap_days += 1;
                self.fill_rect(x_of(date) - day_w / 2.0, y0, day_w, plot_h, (0.9, 0.9, 0.9));
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        // Axes, grid and labels.
        for step in 0..=4 {
            let pct = f64::from(low) + f64::from(100.0 - low) * f64::from(step) / 4.0;
            let y = y_of(pct);
            self.line((x0, y), (x0 + plot_w, y), 0.3, (0.8, 0.8, 0.8));
            let label = format!("{pct:.1}%");
            self.text_at(
                x0 - 4.0 - text_width(&label, 7.0, false),
                y - 2.5,
                7.0,
                false,
                GREY,
                &label,
            );
        }
        self.line((x0, y0), (x0, y0 + plot_h), 0.6, GREY);
        self.line((x0, y0), (x0 + plot_w, y0), 0.6, GREY);
        let mut date = from;
        let mut last_label_x = f32::MIN;
        while date <= to {
            let mark = if span <= 31.0 {
                date.weekday() == chrono::Weekday::Mon || date == from
            } else {
                date.day() == 1 || date == from
            };
            if mark {
                let x = x_of(date) - day_w / 2.0;
                let label = if span <= 31.0 {
                    date.format("%d %b").to_string()
                } else {
                    date.format("%b %Y").to_string()
                };
                if x > last_label_x + 4.0 {
                    self.line((x, y0), (x, y0 - 3.0), 0.5, GREY);
                    self.text_at(x + 1.0, y0 - 11.0, 6.5, false, GREY, &label);
                    last_label_x = x + text_width(&label, 6.5, false);
                }
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        // The two series, broken at every day without a figure.
        let series: [Series; 2] = [
            ("Primary line", ORANGE, |d| d.primary_pct),
            ("Effective (what the practice had)", BLUE, |d| {
                d.effective_pct
            }),
        ];
        let mut sorted: Vec<&AvailabilityDay> = days.to_vec();
        sorted.sort_by_key(|d| d.date);
        for (_, color, value) in &series {
            let mut run: Vec<(f32, f32)> = Vec::new();
            let mut previous: Option<NaiveDate> = None;
            let flush = |layout: &mut Layout, run: &mut Vec<(f32, f32)>| {
                match run.as_slice() {
                    [] => {}
                    [(x, y)] => layout.fill_rect(x - 1.5, y - 1.5, 3.0, 3.0, *color),
                    points => {
                        let content = layout.page();
                        content.set_stroke_rgb(color.0, color.1, color.2);
                        content.set_line_width(1.2);
                        content.move_to(points[0].0, points[0].1);
                        for (x, y) in &points[1..] {
                            content.line_to(*x, *y);
                        }
                        content.stroke();
                    }
                }
                run.clear();
            };
            for day in &sorted {
                if day.date < from || day.date > to {
                    continue;
                }
                let consecutive = previous.and_then(|p| p.succ_opt()) == Some(day.date);
                match value(day) {
                    Some(pct) => {
                        if !consecutive {
                            flush(self, &mut run);
                        }
                        run.push((x_of(day.date), y_of(pct)));
                    }
                    None => flush(self, &mut run),
                }
                previous = Some(day.date);
            }
            flush(self, &mut run);
        }
        // Legend.
        let mut x = x0;
        let legend_y = y0 - 26.0;
        for (name, color, _) in &series {
            self.fill_rect(x, legend_y + 1.0, 12.0, 3.0, *color);
            self.text_at(x + 16.0, legend_y, 8.0, false, BLACK, name);
            x += 24.0 + text_width(name, 8.0, false);
        }
        self.fill_rect(x, legend_y - 1.0, 10.0, 8.0, (0.9, 0.9, 0.9));
        let gap_label = format!("No data ({gap_days} day(s)): a gap, not counted as up");
        self.text_at(x + 14.0, legend_y, 8.0, false, BLACK, &gap_label);
        self.y = legend_y - 14.0;
    }

    fn finish(self, input: &EvidenceInput) -> Vec<u8> {
        let mut pdf = Pdf::new();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let regular = Ref::new(3);
        let bold = Ref::new(4);
        let info = Ref::new(5);
        let count = self.pages.len();
        let page_ids: Vec<Ref> = (0..count).map(|i| Ref::new(6 + 2 * i as i32)).collect();
        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree)
            .kids(page_ids.iter().copied())
            .count(count as i32);
        for (font, name) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
            pdf.type1_font(font)
                .base_font(Name(name.as_bytes()))
                .encoding_predefined(Name(b"WinAnsiEncoding"));
        }
        let title = format!(
            "Contingency plan evidence: {} {}",
            input.practice_name,
            period_label(input.period, input.from, input.to)
        );
        pdf.document_info(info)
            .title(TextStr(&title))
            .author(TextStr(&input.tenant_name))
            .creator(TextStr("StayOpen cloud"))
            .producer(TextStr("StayOpen cloud (pdf-writer)"));
        let footer_text = format!(
            "StayOpen evidence | {} | {}",
            input.practice_name,
            period_label(input.period, input.from, input.to)
        );
        for (i, mut content) in self.pages.into_iter().enumerate() {
            let footer: Vec<u8> = footer_text.chars().map(win_ansi).collect();
            let number = format!("page {} of {count}", i + 1);
            content.set_fill_rgb(GREY.0, GREY.1, GREY.2);
            content.begin_text();
            content.set_font(REGULAR, 7.5);
            content.next_line(MARGIN, 30.0);
            content.show(Str(&footer));
            content.end_text();
            content.begin_text();
            content.set_font(REGULAR, 7.5);
            content.next_line(PAGE_W - MARGIN - text_width(&number, 7.5, false), 30.0);
            content.show(Str(number.as_bytes()));
            content.end_text();
            let page_id = page_ids[i];
            let content_id = Ref::new(page_id.get() + 1);
            let mut page = pdf.page(page_id);
            page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
            page.parent(tree);
            page.contents(content_id);
            page.resources()
                .fonts()
                .pair(REGULAR, regular)
                .pair(BOLD, bold);
            page.finish();
            pdf.stream(content_id, &content.finish());
        }
        pdf.finish()
    }
}

fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h} h {m:02} min")
    } else if m > 0 {
        format!("{m} min {s:02} s")
    } else {
        format!("{s} s")
    }
}

fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "no data".to_owned(), |v| format!("{v:.3} %"))
}

fn ms(value: Option<u32>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |v| format!("{:.1} s", f64::from(v) / 1000.0),
    )
}

fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The summary of `input`, signed by the key with `key_fingerprint`.
pub fn summary(input: &EvidenceInput, key_fingerprint: &str) -> Vec<u8> {
    let mut doc = Layout::new();
    let period = period_label(input.period, input.from, input.to);
    let awaiting: Vec<_> = input
        .drills
        .iter()
        .filter(|d| d.outcome != DrillOutcome::Running && d.sign_off.is_none())
        .collect();

    // Cover.
    doc.space(90.0);
    doc.paragraph_styled("HIPAA contingency plan evidence", 24.0, true, BLACK);
    doc.paragraph_styled("45 CFR 164.308(a)(7) and 164.316", 13.0, false, GREY);
    doc.space(30.0);
    doc.field("Practice", &input.practice_name);
    doc.field("Practice id", &input.practice_id.to_string());
    doc.field("Managed by", &input.tenant_name);
    doc.field(
        "Period",
        &format!(
            "{period} ({} to {}, {})",
            input.from,
            input.to,
            input.period.as_str()
        ),
    );
    doc.field("Generated at", &when(input.generated_at));
    doc.field("Signing key", key_fingerprint);
    doc.space(20.0);
    doc.subheading("In this package");
    let signed = input.drills.iter().filter(|d| d.sign_off.is_some()).count();
    for line in [
        format!(
            "Availability: {} month(s) of primary-line and effective availability, day by day.",
            input.availability.len()
        ),
        format!(
            "Drills: {} ({} passed, {} failed, {} signed off, {} awaiting sign-off).",
            input.drills.len(),
            input
                .drills
                .iter()
                .filter(|d| d.outcome == DrillOutcome::Passed)
                .count(),
            input
                .drills
                .iter()
                .filter(|d| d.outcome == DrillOutcome::Failed)
                .count(),
            signed,
            awaiting.len()
        ),
        format!(
            "Incidents: {} outage(s) of the primary line.",
            input.incidents.len()
        ),
        format!(
            "Critical applications register: {} application(s).",
            input.register.len()
        ),
        format!(
            "Audit log: {} entries of this practice in the period (audit_log.jsonl), bound to the MSP's hash chain at entry {} (audit_chain_head.json).",
            input.audit.len(),
            input.chain_head.seq
        ),
    ] {
        doc.indented(10.0, &format!("• {line}"), 10.0, false, BLACK);
    }
    doc.space(10.0);
    doc.subheading("How to check this package");
    doc.paragraph(
        "manifest.json lists the SHA-256 and size of every file; manifest.sig is the Ed25519 signature of manifest.json by the key above. Anyone can check both offline with: stayopen-cloud evidence verify FILE.zip --public-key evidence-public-key.pem, using the public key the cloud publishes at /api/v1/evidence/public-key (compare its fingerprint with the one above). Every CSV file holds a table of this summary, in full.",
    );

    // HIPAA mapping.
    doc.new_page();
    doc.heading("What this package evidences");
    doc.paragraph(
        "Each implementation specification of the contingency plan standard, 164.308(a)(7)(ii), and where this package shows it. StayOpen keeps the practice connected when its primary internet line fails; it does not hold or back up the practice's data, so parts of (A) and (B) must be evidenced by the practice's other systems.",
    );
    let rows: Vec<Vec<String>> = HIPAA_MAPPING
        .iter()
        .map(|m| {
            vec![
                format!("{} {}", m.specification, m.title),
                m.coverage.to_owned(),
                m.evidence.to_owned(),
                m.note.to_owned(),
            ]
        })
        .collect();
    doc.table(
        &[
            ("Specification", 1.3),
            ("Coverage", 0.8),
            ("Evidence in this package", 1.6),
            ("Notes", 2.6),
        ],
        &rows,
        &[],
    );

    // Availability.
    doc.heading("Availability");
    doc.paragraph(
        "Primary-line availability is the share of observed time the practice's primary line was up; effective availability is the share of observed time the practice had internet on any uplink (what it experienced). Time without a report from an appliance is a gap: it is neither up nor down, and is shown separately.",
    );
    let days: Vec<&AvailabilityDay> = input.availability.iter().flat_map(|m| &m.days).collect();
    doc.availability_chart(input.from, input.to, &days);
    let rows: Vec<Vec<String>> = input
        .availability
        .iter()
        .map(|m| {
            let observed = if m.period_secs == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.1} %",
                    m.observed_secs as f64 * 100.0 / m.period_secs as f64
                )
            };
            vec![
                m.month.format("%Y-%m").to_string(),
                pct(m.primary_pct),
                pct(m.effective_pct),
                observed,
                duration(m.gap_secs),
                duration(m.on_backup_secs),
            ]
        })
        .collect();
    if rows.is_empty() {
        doc.paragraph("No availability data for this period.");
    } else {
        doc.table(
            &[
                ("Month", 0.8),
                ("Primary line", 1.0),
                ("Effective", 1.0),
                ("Observed", 0.8),
                ("Gaps (appliance time)", 1.2),
                ("On backup", 1.1),
            ],
            &rows,
            &[],
        );
    }

    // Drills.
    doc.heading("Drills (164.308(a)(7)(ii)(D))");
    if !awaiting.is_empty() {
        doc.paragraph_styled(
            &format!(
                "{} drill(s) await the compliance officer's sign-off: {}.",
                awaiting.len(),
                awaiting
                    .iter()
                    .map(|d| format!("{} on {}", d.appliance_serial, when(d.started_at)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            10.0,
            true,
            RED,
        );
    }
    if input.drills.is_empty() {
        doc.paragraph("No drill ran in this period.");
    } else {
        let rows: Vec<Vec<String>> = input
            .drills
            .iter()
            .map(|d| {
                vec![
                    when(d.started_at),
                    d.appliance_serial.clone(),
                    d.trigger.as_str().to_owned(),
                    d.outcome.as_str().to_owned(),
                    ms(d.switchover_ms),
                    format!(
                        "{}/{}",
                        d.apps.iter().filter(|a| a.reachable).count(),
                        d.apps.len()
                    ),
                    d.sign_off.as_ref().map_or_else(
                        || "awaiting sign-off".to_owned(),
                        |s| format!("{} {}", s.name, s.signed_at.format("%Y-%m-%d")),
                    ),
                ]
            })
            .collect();
        let colors: Vec<Rgb> = input
            .drills
            .iter()
            .map(|d| match d.outcome {
                DrillOutcome::Failed => RED,
                DrillOutcome::Passed => BLACK,
                DrillOutcome::Running => GREY,
            })
            .collect();
        doc.table(
            &[
                ("Started", 1.3),
                ("Appliance", 1.0),
                ("Trigger", 0.8),
                ("Outcome", 0.7),
                ("Switchover", 0.8),
                ("Apps reachable", 0.8),
                ("Sign-off", 1.4),
            ],
            &rows,
            &colors,
        );
        for d in &input.drills {
            doc.subheading(&format!(
                "Drill of {} on {}: {}",
                d.appliance_serial,
                when(d.started_at),
                d.outcome.as_str()
            ));
            doc.field("Reason", if d.reason.is_empty() { "-" } else { &d.reason });
            doc.field("Backup uplink", d.backup_uplink.as_deref().unwrap_or("-"));
            doc.field(
                "Switchover / failback",
                &format!("{} / {}", ms(d.switchover_ms), ms(d.failback_ms)),
            );
            if let Some(finished) = d.finished_at {
                doc.field("Finished", &when(finished));
            }
            for app in &d.apps {
                let result = if app.reachable {
                    format!(
                        "reachable{}",
                        app.latency_ms
                            .map(|l| format!(" ({l:.0} ms)"))
                            .unwrap_or_default()
                    )
                } else {
                    format!(
                        "NOT reachable: {}",
                        app.reason.as_deref().unwrap_or("no answer")
                    )
                };
                doc.indented(
                    10.0,
                    &format!("• {}: {result}", app.app),
                    9.5,
                    false,
                    if app.reachable { GREEN } else { RED },
                );
            }
            match &d.sign_off {
                Some(s) => doc.field(
                    "Signed off",
                    &format!(
                        "{} <{}> on {}: {}",
                        s.name,
                        s.email,
                        when(s.signed_at),
                        if s.comment.is_empty() {
                            "(no comment)"
                        } else {
                            &s.comment
                        }
                    ),
                ),
                None if d.outcome != DrillOutcome::Running => {
                    doc.field("Signed off", "not yet: awaiting the compliance officer")
                }
                None => doc.field("Signed off", "the drill is still running"),
            }
            doc.space(4.0);
        }
    }

    // Incidents.
    doc.heading("Incidents");
    if input.incidents.is_empty() {
        doc.paragraph("No outage of the primary line in this period.");
    } else {
        let rows: Vec<Vec<String>> = input
            .incidents
            .iter()
            .map(|i| {
                vec![
                    when(i.started_at),
                    i.ended_at.map_or_else(|| "ongoing".to_owned(), when),
                    i.appliance_serial.clone(),
                    duration(i.on_backup_secs),
                    if i.traffic_kept_flowing { "yes" } else { "no" }.to_owned(),
                    i.alerts.len().to_string(),
                ]
            })
            .collect();
        doc.table(
            &[
                ("Started", 1.2),
                ("Ended", 1.2),
                ("Appliance", 1.0),
                ("On backup", 0.9),
                ("Traffic kept flowing", 0.9),
                ("Alerts", 0.5),
            ],
            &rows,
            &[],
        );
        for i in &input.incidents {
            doc.subheading(&format!(
                "Incident at {} from {}",
                i.appliance_serial,
                when(i.started_at)
            ));
            doc.field(
                "Uplinks",
                &format!(
                    "failed: {}; carried by: {}",
                    if i.failed_uplinks.is_empty() {
                        "-".to_owned()
                    } else {
                        i.failed_uplinks.join(", ")
                    },
                    if i.backup_uplinks.is_empty() {
                        "none".to_owned()
                    } else {
                        i.backup_uplinks.join(", ")
                    }
                ),
            );
            doc.field("Time on backup", &duration(i.on_backup_secs));
            for app in &i.apps {
                let (text, color) = match app.stayed_reachable {
                    Some(true) => ("stayed reachable".to_owned(), GREEN),
                    Some(false) => (
                        format!(
                            "NOT reachable: {}",
                            app.reason.as_deref().unwrap_or("no answer")
                        ),
                        RED,
                    ),
                    None => ("not checked during the incident".to_owned(), GREY),
                };
                doc.indented(10.0, &format!("• {}: {text}", app.app), 9.5, false, color);
            }
            for alert in &i.alerts {
                doc.indented(
                    10.0,
                    &format!(
                        "Alert {} ({}, {}) at {}",
                        alert.title,
                        alert.kind.as_str(),
                        alert.severity.as_str(),
                        when(alert.raised_at)
                    ),
                    9.0,
                    false,
                    GREY,
                );
            }
            doc.field(
                "Root cause",
                if i.root_cause.is_empty() {
                    "not written yet"
                } else {
                    &i.root_cause
                },
            );
            for c in &i.comments {
                doc.indented(
                    10.0,
                    &format!("{} ({}): {}", c.author, when(c.at), c.body),
                    9.0,
                    false,
                    BLACK,
                );
            }
            doc.space(4.0);
        }
    }

    // Register.
    doc.heading("Critical applications register (164.308(a)(7)(ii)(E))");
    if input.register.is_empty() {
        doc.paragraph_styled(
            "The practice has no critical application in its register.",
            10.0,
            true,
            RED,
        );
    } else {
        let rows: Vec<Vec<String>> = input
            .register
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.tier.label().to_owned(),
                    a.endpoints
                        .iter()
                        .map(|e| e.describe())
                        .collect::<Vec<_>>()
                        .join(", "),
                    a.owner.clone(),
                    a.note.clone(),
                    format!(
                        "{}{}",
                        a.updated_at.format("%Y-%m-%d"),
                        a.updated_by
                            .as_ref()
                            .map(|u| format!(" by {u}"))
                            .unwrap_or_default()
                    ),
                ]
            })
            .collect();
        doc.table(
            &[
                ("Application", 1.0),
                ("Tier", 1.2),
                ("Endpoints", 1.5),
                ("Owner", 0.8),
                ("Note", 1.3),
                ("Last change", 1.0),
            ],
            &rows,
            &[],
        );
    }

    // Audit.
    doc.heading("Audit log");
    doc.paragraph(&format!(
        "audit_log.jsonl holds the {} audit entries about this practice in the period (its practices, sites and appliances, and every change whose values name the practice), each with its sequence number, time, actor, action, target, values before and after, and its link in the MSP's SHA-256 hash chain. At the time of the build the chain's head was entry {} ({}), recorded in audit_chain_head.json. `evidence verify` recomputes every entry's hash.",
        input.audit.len(),
        input.chain_head.seq,
        input.chain_head.hash
    ));
    let mut actions: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for entry in &input.audit {
        *actions.entry(entry.action.as_str()).or_default() += 1;
    }
    if !actions.is_empty() {
        let rows: Vec<Vec<String>> = actions
            .iter()
            .map(|(action, n)| vec![(*action).to_owned(), n.to_string()])
            .collect();
        doc.table(&[("Action", 3.0), ("Entries", 1.0)], &rows, &[]);
    }
    doc.finish(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_wraps_within_the_width_and_cuts_words_longer_than_a_line() {
        let lines = wrap(
            "the quick brown fox jumps over the lazy dog",
            10.0,
            false,
            80.0,
        );
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines.iter().all(|l| text_width(l, 10.0, false) <= 80.0));
        assert_eq!(
            lines.join(" "),
            "the quick brown fox jumps over the lazy dog"
        );
        let long = "x".repeat(100);
        let cut = wrap(&long, 10.0, false, 50.0);
        assert!(cut.len() > 1);
        assert_eq!(cut.concat(), long);
    }

    #[test]
    fn characters_outside_the_font_encoding_become_question_marks() {
        assert_eq!(win_ansi('é'), 0xe9);
        assert_eq!(win_ansi('—'), 0x97);
        assert_eq!(win_ansi('✓'), b'?');
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use crate::domain::evidence::sample;

    #[test]
    fn the_summary_shows_the_practice_period_key_and_every_section_as_text() {
        let input = sample::input();
        let pdf = summary(&input, "SHA256:abc123");
        assert!(pdf.starts_with(b"%PDF-"));
        if let Ok(dir) = std::env::var("STAYOPEN_EVIDENCE_SAMPLE_DIR") {
            std::fs::write(std::path::Path::new(&dir).join("summary.pdf"), &pdf).expect("write");
        }
        // The shown strings in order, one space between them: a phrase the layout wrapped over
        // two lines reads as it does on the page.
        let raw = String::from_utf8_lossy(&pdf);
        let text = raw
            .lines()
            .filter_map(|line| line.strip_suffix(") Tj")?.strip_prefix('('))
            .collect::<Vec<_>>()
            .join(" ");
        for needle in [
            "Maple Street Family Practice",
            "SHA256:abc123",
            "What this package evidences",
            "Data backup plan",
            "Availability",
            "awaiting sign-off",
            "Incidents",
            "Carrier fibre cut by road works",
            "Audit log",
            "3 day",
        ] {
            assert!(text.contains(needle), "{needle} is not in the PDF: {text}");
        }
    }
}
