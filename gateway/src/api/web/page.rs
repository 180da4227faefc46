//! Server-rendered pages of the web form. No JavaScript: the form works on any browser, with a
//! screen reader, and on the slowest phone, and the CSP forbids scripts outright.
//!
//! Accessibility follows the GOV.UK/WCAG patterns: every input has a `<label>`, related inputs
//! sit in a `<fieldset>` with a `<legend>`, errors appear in a summary at the top whose links
//! jump to the fields, each field shows its own message and is marked `aria-invalid`, and the
//! page title starts with 错误 so a screen reader announces the failure first.

use adapters::webform::{DISTRICTS, FieldError, WebForm};

/// Escape text for HTML element content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub const EMERGENCY: &str = "如遇紧急情况请直接拨打110/119/120/122";

fn layout(title: &str, main: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - 武汉市12345网上诉求</title>
<link rel="stylesheet" href="/web/style.css">
</head>
<body>
<a class="skip" href="#main">跳到主要内容</a>
<header class="site"><p class="brand">武汉市12345市民服务热线</p></header>
<main id="main">
{main}
</main>
<footer class="site"><p>12345热线 24小时服务 · <a href="/web/status">查询办理进度</a> · <a href="/">提交新诉求</a></p></footer>
</body>
</html>
"##,
        title = esc(title),
    )
}

fn emergency_notice() -> String {
    format!(
        r#"<aside class="emergency" aria-label="紧急情况提示"><p><strong>{EMERGENCY}</strong></p>
<p>报警110 · 火警119 · 急救120 · 交通事故122。网上诉求不能处理紧急求助。</p></aside>"#
    )
}

/// Everything the form page shows.
#[derive(Debug)]
pub struct FormView<'a> {
    pub form: &'a WebForm,
    pub errors: &'a [FieldError],
    /// A problem with the submission as a whole (expired page, too fast, store busy).
    pub general: Option<&'a str>,
    pub token: &'a str,
    pub max_text_chars: usize,
    pub max_upload_bytes: usize,
    /// `image/jpeg,image/png,...`
    pub accept: &'a str,
    /// `JPEG、PNG、WebP`
    pub type_names: &'a str,
}

const LABELS: [(&str, &str); 6] = [
    ("text", "诉求内容"),
    ("district", "所在区"),
    ("address", "详细地址"),
    ("name", "联系人"),
    ("phone", "联系电话"),
    ("photo", "现场照片"),
];

fn label_of(field: &str) -> &'static str {
    LABELS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or("", |(_, l)| l)
}

impl FormView<'_> {
    fn error(&self, field: &str) -> Option<&FieldError> {
        self.errors.iter().find(|e| e.field == field)
    }

    /// `(class suffix, aria attributes, message html)` of a field.
    fn state(&self, field: &str, hint: bool) -> (&'static str, String, String) {
        let hint_id = if hint {
            format!("{field}-hint")
        } else {
            String::new()
        };
        match self.error(field) {
            None if hint => (
                "",
                format!(r#" aria-describedby="{hint_id}""#),
                String::new(),
            ),
            None => ("", String::new(), String::new()),
            Some(e) => (
                " field-error",
                format!(r#" aria-invalid="true" aria-describedby="{hint_id} {field}-error""#),
                format!(
                    r#"<p class="error-message" id="{field}-error"><span class="visually-hidden">错误：</span>{}</p>"#,
                    esc(&e.message)
                ),
            ),
        }
    }
}

pub fn form_page(v: &FormView<'_>) -> String {
    let mut main = String::new();
    main.push_str("<h1>网上提交诉求</h1>\n");
    main.push_str(&emergency_notice());
    if !v.errors.is_empty() || v.general.is_some() {
        main.push_str(
            r#"<div class="error-summary" role="alert" aria-labelledby="error-summary-title" tabindex="-1">
<h2 id="error-summary-title">提交未成功，请修改以下问题</h2><ul>"#,
        );
        if let Some(g) = v.general {
            main.push_str(&format!("<li>{}</li>", esc(g)));
        }
        for e in v.errors {
            main.push_str(&format!(
                r##"<li><a href="#{}">{}：{}</a></li>"##,
                e.field,
                label_of(e.field),
                esc(&e.message)
            ));
        }
        main.push_str("</ul></div>\n");
    }
    let f = v.form;
    let (tc, ta, tm) = v.state("text", true);
    let (dc, da, dm) = v.state("district", false);
    let (ac, aa, am) = v.state("address", true);
    let (nc, na, nm) = v.state("name", false);
    let (pc, pa, pm) = v.state("phone", true);
    let (hc, ha, hm) = v.state("photo", true);
    let mut options = String::from(r#"<option value="">请选择</option>"#);
    for d in DISTRICTS {
        let selected = if f.district.trim() == d {
            " selected"
        } else {
            ""
        };
        options.push_str(&format!(r#"<option value="{d}"{selected}>{d}</option>"#));
    }
    let mb = v.max_upload_bytes as f64 / (1024.0 * 1024.0);
    main.push_str(&format!(
        r#"<p class="lead">请如实填写，带 <span class="req">*</span> 的为必填项。提交后会得到工单号，可凭工单号查询办理进度。</p>
<form method="post" action="/web/submit" enctype="multipart/form-data" novalidate>
<input type="hidden" name="token" value="{token}">
<div class="field{tc}">
<label for="text">诉求内容 <span class="req" aria-hidden="true">*</span><span class="visually-hidden">（必填）</span></label>
<p class="hint" id="text-hint">请写清楚发生了什么、什么时间、在哪里，最多{max_text}字。</p>
{tm}<textarea id="text" name="text" rows="6" maxlength="{max_text}" required{ta}>{text}</textarea>
</div>
<fieldset>
<legend>问题发生地点</legend>
<div class="field{dc}">
<label for="district">所在区 <span class="req" aria-hidden="true">*</span><span class="visually-hidden">（必填）</span></label>
{dm}<select id="district" name="district" required{da}>{options}</select>
</div>
<div class="field{ac}">
<label for="address">详细地址</label>
<p class="hint" id="address-hint">街道、小区、门牌号或附近的标志性建筑。</p>
{am}<input id="address" name="address" type="text" maxlength="200" autocomplete="street-address" value="{address}"{aa}>
</div>
</fieldset>
<fieldset>
<legend>联系方式（选填）</legend>
<p class="hint">留下电话，工作人员可以回访告知办理结果。您的信息仅用于办理本诉求。</p>
<div class="field{nc}">
<label for="name">联系人</label>
{nm}<input id="name" name="name" type="text" maxlength="32" autocomplete="name" value="{name}"{na}>
</div>
<div class="field{pc}">
<label for="phone">联系电话</label>
<p class="hint" id="phone-hint">手机号码，或带区号的固定电话，如 027-88886666。</p>
{pm}<input id="phone" name="phone" type="tel" inputmode="tel" maxlength="20" autocomplete="tel" value="{phone}"{pa}>
</div>
</fieldset>
<div class="field{hc}">
<label for="photo">现场照片（选填）</label>
<p class="hint" id="photo-hint">一张照片，{types}格式，不超过{mb:.0}MB。{again}</p>
{hm}<input id="photo" name="photo" type="file" accept="{accept}"{ha}>
</div>
<div class="hp" aria-hidden="true">
<label for="website">请勿填写此项</label>
<input id="website" name="website" type="text" tabindex="-1" autocomplete="off">
</div>
<button type="submit" class="button">提交诉求</button>
</form>
"#,
        token = esc(v.token),
        max_text = v.max_text_chars,
        text = esc(&f.text),
        address = esc(&f.address),
        name = esc(&f.name),
        phone = esc(&f.phone),
        accept = esc(v.accept),
        types = esc(v.type_names),
        again = if v.errors.is_empty() && v.general.is_none() {
            ""
        } else {
            "如需上传照片，请重新选择。"
        },
    ));
    let title = if v.errors.is_empty() && v.general.is_none() {
        "网上提交诉求".to_owned()
    } else {
        "错误：网上提交诉求".to_owned()
    };
    layout(&title, &main)
}

/// The confirmation page: the order number in large digits, the emergency referral first when
/// normalization found one, and how to follow up.
pub fn confirmation_page(order_id: &str, referral: Option<u16>) -> String {
    let mut main = String::new();
    if let Some(n) = referral {
        main.push_str(&format!(
            r#"<div class="emergency emergency-urgent" role="alert"><h2>您描述的情况可能是紧急情况</h2>
<p class="big-call">请立即拨打 <a href="tel:{n}">{n}</a></p>
<p>网上诉求不能代替紧急求助。您的诉求已记录，但紧急情况请马上拨打{n}。</p></div>
"#
        ));
    }
    let grouped = order_id
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    main.push_str(&format!(
        r#"<div class="panel" role="status">
<h1>诉求已提交</h1>
<p>您的工单号是</p>
<p class="order-number" id="order-number" data-order-id="{id}" aria-label="工单号 {spaced}">{grouped}</p>
</div>
<h2>接下来</h2>
<ul class="steps">
<li>请记下工单号。工作人员将在规定时限内受理并转交承办单位。</li>
<li>查询进度：拨打12345热线并报出工单号，或在本网站<a href="/web/status?order={id}">查询办理进度</a>。</li>
<li>如留有联系电话，承办单位可能与您联系核实情况并回访办理结果。</li>
</ul>
<p><a class="button button-secondary" href="/">提交新诉求</a></p>
"#,
        id = esc(order_id),
        spaced = order_id.chars().map(String::from).collect::<Vec<_>>().join(" "),
    ));
    if referral.is_none() {
        main.push_str(&emergency_notice());
    }
    layout("诉求已提交", &main)
}

/// A page with a heading and a paragraph, for refusals (429, 400, 403) and failures.
pub fn message_page(title: &str, message: &str) -> String {
    let main = format!(
        r#"<h1>{}</h1>
<p>{}</p>
{}
<p><a class="button button-secondary" href="/">返回诉求表单</a></p>"#,
        esc(title),
        esc(message),
        emergency_notice()
    );
    layout(title, &main)
}

/// The progress page: a form for the order number and, once found, its status history. Only
/// statuses and times: anyone who knows a number may look, so nothing the citizen wrote is shown.
pub fn status_page(query: &str, error: Option<&str>, found: Option<&StatusView>) -> String {
    let mut main = String::from("<h1>查询办理进度</h1>\n");
    if let Some(e) = error {
        main.push_str(&format!(
            r##"<div class="error-summary" role="alert"><h2>查询未成功</h2><ul><li><a href="#order">{}</a></li></ul></div>"##,
            esc(e)
        ));
    }
    main.push_str(&format!(
        r#"<form method="get" action="/web/status">
<div class="field{}">
<label for="order">工单号</label>
<p class="hint" id="order-hint">提交诉求后页面上显示的数字。</p>
<input id="order" name="order" type="text" inputmode="numeric" autocomplete="off" maxlength="32" value="{}" aria-describedby="order-hint">
</div>
<button type="submit" class="button">查询</button>
</form>
"#,
        if error.is_some() { " field-error" } else { "" },
        esc(query)
    ));
    if let Some(s) = found {
        main.push_str(&format!(
            r#"<div class="panel" role="status"><h2>工单 {}</h2><p class="status-now">当前状态：<strong>{}</strong></p><ol class="history">"#,
            esc(&s.id),
            esc(s.status)
        ));
        for (at, status) in &s.history {
            main.push_str(&format!(
                "<li><time>{}</time> {}</li>",
                esc(at),
                esc(status)
            ));
        }
        main.push_str("</ol></div>\n");
    }
    main.push_str("<p>也可以拨打12345热线，报出工单号查询。</p>");
    layout("查询办理进度", &main)
}

/// What the progress page shows of an order.
#[derive(Debug)]
pub struct StatusView {
    pub id: String,
    pub status: &'static str,
    pub history: Vec<(String, &'static str)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_escaped_and_errors_link_to_fields() {
        let form = WebForm {
            text: "<script>alert(1)</script>".into(),
            district: "江汉区".into(),
            ..WebForm::default()
        };
        let errors = [FieldError::new("phone", "请填写11位手机号码")];
        let html = form_page(&FormView {
            form: &form,
            errors: &errors,
            general: None,
            token: "t\"x",
            max_text_chars: 500,
            max_upload_bytes: 5 << 20,
            accept: "image/png",
            type_names: "PNG",
        });
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains(r##"<a href="#phone">联系电话：请填写11位手机号码</a>"##));
        assert!(html.contains(r#"id="phone-error""#));
        assert!(html.contains(r#"<option value="江汉区" selected>"#));
        assert!(html.contains("value=\"t&quot;x\""));
        assert!(html.contains("<title>错误："));
        assert!(html.contains(EMERGENCY));
    }

    #[test]
    fn confirmation_shows_the_referral_first() {
        let html = confirmation_page("26112301000042", Some(119));
        let call = html.find("请立即拨打").expect("referral");
        let number = html.find("order-number").expect("number");
        assert!(call < number);
        assert!(html.contains(r#"data-order-id="26112301000042""#));
    }
}
