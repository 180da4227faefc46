//! Realistic citizen submissions for `POST /v1/submissions`, varied in text, phone, district and
//! kind, serialized once up front so the generator spends no CPU on JSON while it runs.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const DISTRICTS: [(&str, &[&str], f64, f64); 8] = [
    (
        "江汉区",
        &["民族街道", "花楼街道", "万松街道"],
        30.58,
        114.27,
    ),
    (
        "江岸区",
        &["大智街道", "球场街道", "后湖街道"],
        30.60,
        114.30,
    ),
    (
        "硚口区",
        &["古田街道", "宝丰街道", "汉正街道"],
        30.57,
        114.25,
    ),
    (
        "武昌区",
        &["中华路街道", "水果湖街道", "徐家棚街道"],
        30.55,
        114.32,
    ),
    (
        "洪山区",
        &["珞南街道", "关山街道", "青山街道"],
        30.50,
        114.35,
    ),
    (
        "汉阳区",
        &["四新街道", "琴断口街道", "建桥街道"],
        30.55,
        114.22,
    ),
    (
        "青山区",
        &["红钢城街道", "钢花村街道", "厂前街道"],
        30.63,
        114.39,
    ),
    (
        "东西湖区",
        &["吴家山街道", "金银湖街道", "将军路街道"],
        30.62,
        114.14,
    ),
];

const ROADS: [&str; 8] = [
    "解放大道",
    "中山大道",
    "建设大道",
    "发展大道",
    "珞喻路",
    "武珞路",
    "友谊大道",
    "汉阳大道",
];

const SURNAMES: [&str; 10] = ["张", "王", "李", "刘", "陈", "杨", "赵", "黄", "周", "吴"];

/// `{road}`, `{n}` and `{time}` are filled in per message.
const MESSAGES: [(&str, Option<&str>); 14] = [
    (
        "{road}{n}号小区楼下烧烤摊每天营业到凌晨两点，油烟和噪音严重扰民，多次劝说无效，请相关部门处理。",
        Some("complaint"),
    ),
    (
        "我家所在的{road}{n}号楼从今天{time}开始停水，没有任何通知，家里有老人小孩，请尽快恢复供水。",
        None,
    ),
    (
        "{road}与支路交叉口的红绿灯坏了三天了，早晚高峰非常拥堵，存在安全隐患，希望尽快维修。",
        None,
    ),
    (
        "咨询一下：新生儿办理医保需要哪些材料？在{road}附近的政务服务中心可以办理吗？周末是否上班？",
        Some("consultation"),
    ),
    (
        "举报{road}{n}号附近有工地夜间违规施工，晚上十一点以后还在打桩，严重影响周边居民休息。",
        None,
    ),
    (
        "建议在{road}公交站增设遮雨棚和座椅，老年人等车很不方便，下雨天只能站在雨里。",
        None,
    ),
    (
        "表扬{road}社区网格员小王，上周帮助独居老人联系维修燃气灶，服务热情周到，特此致谢。",
        None,
    ),
    (
        "小区物业乱收费，{road}{n}号小区今年停车费从每月150元涨到300元，没有经过业主大会同意。",
        None,
    ),
    (
        "{road}{n}号门口人行道上的井盖缺失，已经有行人差点掉进去，非常危险，请马上处理！",
        None,
    ),
    (
        "求助：我母亲独自住在{road}{n}号，行动不便，最近无人照顾，想了解社区有没有上门养老服务。",
        None,
    ),
    (
        "{road}沿线路灯从{time}起全部不亮，晚上一片漆黑，女生下班回家很害怕，请尽快修复。",
        None,
    ),
    (
        "公司拖欠工资三个月，共计两万三千元，老板电话不接，地址在{road}{n}号写字楼，请帮忙维权。",
        None,
    ),
    (
        "请问{road}附近的垃圾分类投放点什么时候开放？厨余垃圾桶经常满溢，气味很大，希望增加清运次数。",
        None,
    ),
    (
        "{road}{n}号小区电梯反复故障，今天{time}又困人了，物业说要等厂家，希望监管部门督促整改。",
        Some("complaint"),
    ),
];

/// `count` different request bodies (JSON, UTF-8), deterministic for a given `seed`.
pub fn bodies(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|i| body(&mut rng, i)).collect()
}

fn body(rng: &mut StdRng, i: usize) -> Vec<u8> {
    let (district, streets, lat, lng) = DISTRICTS[rng.random_range(0..DISTRICTS.len())];
    let street = streets[rng.random_range(0..streets.len())];
    let road = ROADS[rng.random_range(0..ROADS.len())];
    let n = rng.random_range(1..=399u32);
    let time = format!(
        "{}点{:02}分",
        rng.random_range(6..=22u32),
        rng.random_range(0..60u32)
    );
    let (template, kind) = MESSAGES[i % MESSAGES.len()];
    let text = template
        .replace("{road}", road)
        .replace("{n}", &n.to_string())
        .replace("{time}", &time);
    let prefix = ["139", "138", "186", "150", "177", "133"][rng.random_range(0..6)];
    let phone = format!(
        "{prefix}{:04}{:04}",
        rng.random_range(0..10_000u32),
        rng.random_range(0..10_000u32)
    );
    let name = format!(
        "{}{}",
        SURNAMES[rng.random_range(0..SURNAMES.len())],
        if rng.random_bool(0.5) {
            "先生"
        } else {
            "女士"
        }
    );
    let mut v = json!({
        "text": text,
        "citizen": { "name": name, "phone": phone },
        "location": {
            "address": format!("{district}{road}{n}号"),
            "district": district,
            "street": street,
            "lat": lat + rng.random_range(-0.02..0.02),
            "lng": lng + rng.random_range(-0.02..0.02),
        },
        "external_id": format!("app-{seed:08x}-{i}", seed = rng.random::<u32>()),
    });
    if let (Some(kind), Value::Object(map)) = (kind, &mut v) {
        map.insert("kind".into(), json!(kind));
    }
    if i.is_multiple_of(5) {
        v["attachments"] =
            json!([{ "url": format!("https://files.example.cn/u/{i}.jpg"), "mime": "image/jpeg" }]);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_vary_and_are_json_objects() {
        let b = bodies(32, 7);
        assert_eq!(b.len(), 32);
        assert_ne!(b[0], b[1]);
        for body in &b {
            let v: Value = serde_json::from_slice(body).expect("json");
            assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()));
        }
    }
}
