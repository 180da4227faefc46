//! Rules for emergency referral, urgency and kind.
//!
//! These are rules rather than a model because they must be explainable on the spot (a dispatcher
//! sees which words triggered a referral) and because a missed fire costs more than any
//! misclassification: the emergency rules favour recall, and negation handling keeps them from
//! crying wolf on "没有着火" or "消防通道被占，有火灾隐患".
//!
//! Text is cut into clauses at punctuation; a cue counts only if its clause has no negation,
//! hypothetical, past or drill marker before it, and no "隐患/演练" after it.

use rustc_hash::FxHashMap;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

use crate::work_order::{EmergencyReferral, Kind, Urgency};

/// Cues by service, in priority order: a fire is 119's even with injuries (they bring 120); a
/// violent crime is 110's; a road accident 122's; anyone ill or hurt otherwise 120's.
const EMERGENCY_CUES: [(EmergencyReferral, &[&str]); 4] = [
    (
        EmergencyReferral::Fire,
        &[
            "着火",
            "失火",
            "起火",
            "火灾",
            "烧起来",
            "大火",
            "燃起来",
            "燃气泄漏",
            "煤气泄漏",
            "天然气泄漏",
            "煤气味",
            "燃气味",
            "天然气味",
            "困在电梯",
            "电梯困人",
            "被困电梯",
            "电梯里出不来",
            "a fire",
            "on fire",
            "gas leak",
        ],
    ),
    (
        EmergencyReferral::Police,
        &[
            "抢劫",
            "打劫",
            "抢包",
            "抢东西",
            "打架",
            "斗殴",
            "打群架",
            "持刀",
            "拿刀",
            "砍人",
            "杀人",
            "绑架",
            "入室盗窃",
            "撬门",
            "撬锁",
            "家暴",
            "殴打",
            "打人",
            "被打",
            "拐卖",
            "偷小孩",
            "抢孩子",
            "跳楼",
            "轻生",
            "自杀",
            "猥亵",
            "性侵",
            "尾随",
            "非礼",
            "走失",
            "失踪",
            "有人落水",
            "溺水",
            "掉进河",
            "掉进湖",
            "掉水里",
            "砸车",
            "闹事",
            "持枪",
            "在撬",
            "撬我家",
            "在家打我",
            "动手打",
            "打伤",
            "还没回家",
            "孩子不见了",
            "找不到孩子",
            "抱走",
            "拐走",
            "robbery",
            "robbed",
            "stabbed",
        ],
    ),
    (
        EmergencyReferral::Traffic,
        &[
            "车祸",
            "撞车",
            "交通事故",
            "追尾",
            "被车撞",
            "撞倒",
            "撞伤",
            "撞了人",
            "撞人",
            "翻车",
            "侧翻",
            "相撞",
            "肇事逃逸",
            "撞到人",
            "撞上",
            "car accident",
            "car crash",
        ],
    ),
    (
        EmergencyReferral::Medical,
        &[
            "晕倒",
            "昏倒",
            "昏迷",
            "不省人事",
            "呼吸困难",
            "没有呼吸",
            "没了呼吸",
            "喘不上气",
            "大出血",
            "流了很多血",
            "流血不止",
            "心脏病发",
            "心梗",
            "心脏骤停",
            "中风",
            "抽搐",
            "休克",
            "急救",
            "救护车",
            "割腕",
            "喝农药",
            "服毒",
            "吃了安眠药",
            "中毒",
            "摔倒在地",
            "倒地不起",
            "突然倒下",
            "口吐白沫",
            "难产",
            "快不行了",
            "喝了农药",
            "误喝",
            "误服",
            "误食",
            "安眠药",
            "叫不醒",
            "unconscious",
            "ambulance",
            "heart attack",
        ],
    ),
];

/// Cues that mean fire only when nothing more specific matched (a crashed car "冒烟" is 122's)
/// and the text is not about cooking fumes or chimneys.
const WEAK_FIRE_CUES: &[&str] = &["冒烟", "浓烟", "爆炸", "火光"];
const WEAK_FIRE_CONTEXT_OFF: &[&str] = &["油烟", "烧烤", "烟囱", "焚烧", "秸秆", "烧纸"];

/// Markers before a cue in the same clause that make it not a present emergency.
const NEGATORS: &[&str] = &[
    "没有",
    "没",
    "不是",
    "并非",
    "并未",
    "未发生",
    "无人员",
    "不会",
    "不要",
    "防止",
    "预防",
    "以防",
    "避免",
    "万一",
    "如果",
    "假如",
    "要是",
    "担心",
    "害怕",
    "怕会",
    "容易",
    "可能会",
    "会不会",
    "算不算",
    "烟囱",
    "模拟",
    "去年",
    "上个月",
    "上周",
    "以前",
    "之前",
    "曾经",
    "前几天",
    "前年",
    "上次",
    "演练",
    "演习",
    "宣传",
    "培训",
    "新闻",
    "电视",
    "电影",
    "游戏",
    "小说",
    "咨询",
    "请问",
    "如何",
    "怎么",
    "打击",
    "严厉",
    "杜绝",
    "远离",
];

/// Markers after a cue in the same clause that make it not a present emergency.
const AFTER_NEGATORS: &[&str] = &[
    "隐患",
    "演练",
    "演习",
    "风险",
    "预案",
    "知识",
    "宣传",
    "保险",
    "报警器",
    "已经扑灭",
    "扑灭了",
    "已灭",
    "已处理",
    "通道",
    "案件进展",
    "案子",
    "理赔",
    "找回",
    "找到了",
    "回家了",
    "收费",
    "费用",
    "价格",
];

/// Everyday phrases that contain a cue but mean nothing urgent; removed before matching.
const FALSE_FRIENDS: &[&str] = &[
    "被打扰",
    "跳楼价",
    "跳楼甩卖",
    "火烧眉毛",
    "大火收汁",
    "急救中心",
    "打架子鼓",
    "自杀式",
    "急救箱",
    "急救包",
    "急救药",
    "急救培训",
];

/// Cues that make a matter urgent without being an emergency.
const URGENT_CUES: &[&str] = &[
    "紧急",
    "十万火急",
    "马上",
    "立即",
    "立刻",
    "危险",
    "隐患",
    "停水",
    "停电",
    "没水",
    "没电",
    "漏水",
    "燃气",
    "塌",
    "倒塌",
    "坍塌",
    "被困",
    "积水",
    "淹",
    "倒灌",
    "高空坠物",
    "井盖",
    "悬空",
    "倾斜",
    "断裂",
    "独居老人",
    "无人照顾",
    "没饭吃",
    "断药",
    "漏电",
    "电线裸露",
    "暴雨",
    "冰冻",
    "结冰",
];

/// Kind cues with weights: an explicit verb ("投诉", "举报") outweighs an implicit one.
const KIND_CUES: [(Kind, &[(&str, u32)]); 6] = [
    (
        Kind::Praise,
        &[
            ("表扬", 4),
            ("点赞", 4),
            ("锦旗", 4),
            ("赞扬", 4),
            ("致谢", 3),
            ("感谢信", 4),
            ("非常感谢", 2),
            ("特别感谢", 3),
            ("十分感谢", 2),
            ("感谢", 1),
            ("辛苦了", 2),
            ("尽职尽责", 2),
            ("热心帮助", 2),
            ("为他们", 1),
            ("好样的", 3),
            ("给力", 1),
        ],
    ),
    (
        Kind::Suggestion,
        &[
            ("建议", 3),
            ("提议", 3),
            ("希望能", 1),
            ("希望增加", 2),
            ("希望增设", 2),
            ("能否增设", 2),
            ("能不能增设", 2),
            ("可否增设", 2),
            ("增设", 1),
            ("呼吁", 2),
            ("是否可以考虑", 2),
            ("可以考虑", 1),
            ("优化", 1),
            ("改进", 1),
            ("意见", 1),
            ("加开", 1),
            ("延长", 1),
        ],
    ),
    (
        Kind::Complaint,
        &[
            ("投诉", 4),
            ("扰民", 2),
            ("不作为", 3),
            ("乱收费", 2),
            ("态度恶劣", 3),
            ("态度差", 2),
            ("拖欠", 2),
            ("欠薪", 2),
            ("噪音", 1),
            ("吵得", 1),
            ("油烟", 1),
            ("推诿", 2),
            ("拒载", 2),
            ("不退", 1),
            ("至今没有", 1),
            ("一直没有", 1),
            ("多次反映", 2),
            ("无人管", 2),
            ("没人管", 2),
            ("太差", 1),
            ("不合理", 1),
            ("坑", 1),
            ("敷衍", 2),
            ("扯皮", 2),
            ("强制", 1),
            ("霸王条款", 2),
            ("受不了", 1),
            ("严重影响", 1),
            ("臭", 1),
            ("坏了", 1),
            ("不处理", 1),
            ("刁难", 2),
        ],
    ),
    (
        Kind::Help,
        &[
            ("求助", 4),
            ("求帮助", 3),
            ("求帮忙", 3),
            ("请帮忙", 2),
            ("快派人", 2),
            ("没办法", 2),
            ("求求", 3),
            ("帮帮", 3),
            ("救救", 3),
            ("帮忙", 2),
            ("救助", 2),
            ("无人照顾", 2),
            ("走投无路", 3),
            ("怎么办", 2),
            ("没钱", 1),
            ("被困", 2),
            ("急需", 2),
            ("无家可归", 3),
            ("找不到", 1),
            ("走失", 2),
            ("联系不上", 2),
            ("生活困难", 2),
            ("困难", 1),
            ("没饭吃", 2),
            ("不知道该", 1),
            ("走丢", 2),
        ],
    ),
    (
        Kind::Report,
        &[
            ("举报", 4),
            ("检举", 4),
            ("揭发", 4),
            ("违法", 2),
            ("违规", 1),
            ("偷排", 3),
            ("违建", 2),
            ("违章建筑", 2),
            ("私搭乱建", 2),
            ("非法", 2),
            ("无证", 2),
            ("黑诊所", 3),
            ("黑车", 2),
            ("传销", 3),
            ("赌博", 3),
            ("聚众", 2),
            ("卖淫", 3),
            ("假冒", 2),
            ("过期", 1),
            ("偷倒", 3),
            ("乱倒", 2),
            ("私自", 1),
            ("偷偷", 1),
            ("占道", 1),
            ("无照", 2),
            ("地下", 1),
        ],
    ),
    (
        Kind::Consultation,
        &[
            ("咨询", 4),
            ("请问", 3),
            ("想问", 3),
            ("问一下", 3),
            ("怎么办理", 3),
            ("如何办理", 3),
            ("需要什么材料", 3),
            ("需要哪些", 2),
            ("怎么申请", 3),
            ("如何申请", 3),
            ("在哪里办", 3),
            ("去哪", 1),
            ("能不能", 1),
            ("可不可以", 1),
            ("是否", 1),
            ("吗", 1),
            ("什么时候", 1),
            ("多少钱", 1),
            ("流程", 2),
            ("政策", 1),
            ("条件", 1),
            ("怎么", 1),
            ("如何", 1),
        ],
    ),
];

/// Split into clauses at punctuation and line breaks.
fn clauses(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| "，。！？；,.!?;\n\r…~～".contains(c))
        .filter(|c| !c.is_empty())
}

/// Whether `cue` occurs in `clause` as a live statement (not negated, hypothetical, past).
fn live_in_clause(clause: &str, cue: &str) -> bool {
    let (negators, after_negators) = &*NEGATION;
    clause.match_indices(cue).any(|(at, _)| {
        let before = &clause[..at];
        let after = &clause[at + cue.len()..];
        !negators.is_match(before) && !after_negators.is_match(after)
    })
}

/// [`NEGATORS`] and [`AFTER_NEGATORS`] as automata: whether any of them occurs before or after
/// a cue in its clause, in one pass each instead of a search per word.
static NEGATION: LazyLock<(AhoCorasick, AhoCorasick)> = LazyLock::new(|| {
    // Built from the constant word lists above, never from input: it cannot fail.
    #[allow(clippy::expect_used)]
    let build = |words: &[&str]| AhoCorasick::new(words).expect("negator automaton");
    (build(NEGATORS), build(AFTER_NEGATORS))
});

fn live(present: &Present<'_>, cue: &str) -> bool {
    present.has(cue) && clauses(present.text).any(|c| live_in_clause(c, cue))
}

/// Every cue word of the rules above, in one Aho-Corasick automaton built on first use: a text
/// is read once to learn which cues occur in it, instead of once per cue (about 250 of them).
struct Lexicon {
    automaton: AhoCorasick,
    index: FxHashMap<&'static str, usize>,
}

static LEXICON: LazyLock<Lexicon> = LazyLock::new(|| {
    let mut words: Vec<&'static str> = EMERGENCY_CUES
        .iter()
        .flat_map(|(_, cues)| cues.iter().copied())
        .chain(WEAK_FIRE_CUES.iter().copied())
        .chain(WEAK_FIRE_CONTEXT_OFF.iter().copied())
        .chain(URGENT_CUES.iter().copied())
        .chain(
            KIND_CUES
                .iter()
                .flat_map(|(_, cues)| cues.iter().map(|(c, _)| *c)),
        )
        .chain(FIRST_PERSON.iter().copied())
        .chain(FALSE_FRIENDS.iter().copied())
        .collect();
    words.sort_unstable();
    words.dedup();
    let index = words.iter().enumerate().map(|(i, w)| (*w, i)).collect();
    // Built from the constant word lists above, never from input: it cannot fail.
    #[allow(clippy::expect_used)]
    let automaton = AhoCorasick::new(&words).expect("the rule cue words build an automaton");
    Lexicon { automaton, index }
});

/// Which cue words occur in one text (the answer `text.contains(cue)` gave, for every cue at
/// once).
struct Present<'t> {
    text: &'t str,
    seen: Vec<bool>,
}

impl<'t> Present<'t> {
    fn of(text: &'t str) -> Self {
        let lexicon = &*LEXICON;
        let mut seen = vec![false; lexicon.index.len()];
        for m in lexicon.automaton.find_overlapping_iter(text) {
            seen[m.pattern().as_usize()] = true;
        }
        Present { text, seen }
    }

    fn has(&self, cue: &str) -> bool {
        match LEXICON.index.get(cue) {
            Some(&i) => self.seen[i],
            None => self.text.contains(cue),
        }
    }
}

/// What the rules decide for one text, reading it once for every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decisions {
    /// The emergency service to refer to, with the cue that decided it.
    pub emergency: Option<(EmergencyReferral, &'static str)>,
    /// Urgency, with the cue that decided it.
    pub urgency: (Urgency, Option<&'static str>),
    /// Kind, with the cues that decided it.
    pub kind: (Kind, Vec<&'static str>),
}

/// Emergency referral, urgency and kind of a text, as [`emergency`], [`urgency`] and
/// [`kind_with`] decide them, with the cue words found in one pass.
pub fn decide(text: &str) -> Decisions {
    let present = Present::of(text);
    let emergency = emergency_in(&present);
    let referral = emergency.map(|(service, _)| service);
    Decisions {
        emergency,
        urgency: urgency_in(&present, referral),
        kind: kind_in(&present, referral),
    }
}

/// The emergency service to refer to, with the cue that decided it.
pub fn emergency(text: &str) -> Option<(EmergencyReferral, &'static str)> {
    emergency_in(&Present::of(text))
}

fn emergency_in(raw: &Present<'_>) -> Option<(EmergencyReferral, &'static str)> {
    // Words that contain a cue but are no emergency ("火锅") are cut out first; most texts
    // have none, and then the cues found in the raw text stand.
    let cleaned_text;
    let cleaned_present;
    let present = if FALSE_FRIENDS.iter().any(|f| raw.has(f)) {
        let mut cleaned = raw.text.to_owned();
        for f in FALSE_FRIENDS {
            if cleaned.contains(f) {
                cleaned = cleaned.replace(f, "，");
            }
        }
        cleaned_text = cleaned;
        cleaned_present = Present::of(&cleaned_text);
        &cleaned_present
    } else {
        raw
    };
    EMERGENCY_CUES
        .iter()
        .find_map(|(service, cues)| {
            cues.iter()
                .find(|cue| live(present, cue))
                .map(|cue| (*service, *cue))
        })
        .or_else(|| {
            if WEAK_FIRE_CONTEXT_OFF.iter().any(|c| present.has(c)) {
                return None;
            }
            WEAK_FIRE_CUES
                .iter()
                .find(|cue| live(present, cue))
                .map(|cue| (EmergencyReferral::Fire, *cue))
        })
}

/// Urgency, with the cue that decided it.
pub fn urgency(text: &str, referral: Option<EmergencyReferral>) -> (Urgency, Option<&'static str>) {
    urgency_in(&Present::of(text), referral)
}

fn urgency_in(
    present: &Present<'_>,
    referral: Option<EmergencyReferral>,
) -> (Urgency, Option<&'static str>) {
    if referral.is_some() {
        return (Urgency::Emergency, None);
    }
    match URGENT_CUES
        .iter()
        .find(|cue| live(present, cue) || (**cue == "隐患" && present.has("隐患")))
    {
        Some(cue) => (Urgency::Urgent, Some(cue)),
        None => (Urgency::Normal, None),
    }
}

/// Kind by weighted cues; with no cue, a question is a consultation and anything else a
/// complaint (what most unlabelled hotline messages are). Ties go to the order of [`KIND_CUES`]:
/// praise and suggestion first because their explicit words are rarely incidental.
pub fn kind(text: &str) -> (Kind, Vec<&'static str>) {
    kind_with(text, None)
}

/// Words showing the caller (or someone with them) needs rescue, not just reports what they saw.
const FIRST_PERSON: &[&str] = &[
    "我",
    "救命",
    "快来",
    "赶紧",
    "求求",
    "被困",
    "困在",
    "出不去",
    "还有人",
    "没下来",
    "呼救",
];

/// Kind, knowing the emergency referral: someone ill is asking for help; a fire, crime or
/// accident is a call for help when the caller is in it, otherwise a witness's report.
pub fn kind_with(text: &str, referral: Option<EmergencyReferral>) -> (Kind, Vec<&'static str>) {
    kind_in(&Present::of(text), referral)
}

fn kind_in(
    present: &Present<'_>,
    referral: Option<EmergencyReferral>,
) -> (Kind, Vec<&'static str>) {
    let text = present.text;
    match referral {
        Some(EmergencyReferral::Medical) => return (Kind::Help, vec!["120"]),
        Some(_) => {
            return match FIRST_PERSON.iter().find(|w| present.has(w)) {
                Some(w) => (Kind::Help, vec![*w]),
                None => (Kind::Report, vec!["witness"]),
            };
        }
        None => {}
    }
    let mut best: Option<(u32, Kind, Vec<&'static str>)> = None;
    for (kind, cues) in &KIND_CUES {
        let mut score = 0;
        let mut hits = Vec::new();
        for (cue, weight) in cues.iter() {
            // A cue inside a longer cue of the same kind counts once (感谢 in 非常感谢).
            if present.has(cue) && !hits.iter().any(|h: &&str| h.contains(cue)) {
                score += weight;
                hits.push(*cue);
            }
        }
        if score > 0 && best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, *kind, hits));
        }
    }
    match best {
        Some((_, kind, hits)) => (kind, hits),
        None if text.contains(['?', '？']) => (Kind::Consultation, vec!["？"]),
        None => (Kind::Complaint, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negated_and_hypothetical_cues_are_not_emergencies() {
        assert_eq!(
            emergency("楼下着火了，快来人"),
            Some((EmergencyReferral::Fire, "着火"))
        );
        assert_eq!(emergency("没有着火，只是有点烟味"), None);
        assert_eq!(emergency("消防通道被堵，存在火灾隐患"), None);
        assert_eq!(emergency("小区搞消防演练，模拟着火"), None);
        assert_eq!(emergency("去年这里发生过车祸，建议装红绿灯"), None);
        assert_eq!(emergency("担心会出车祸"), None);
        // "没有呼吸" is itself the cue: the negation is inside it, not before it.
        assert_eq!(
            emergency("我爸突然没有呼吸了"),
            Some((EmergencyReferral::Medical, "没有呼吸"))
        );
        assert_eq!(
            emergency("路口两车相撞，有人受伤流血"),
            Some((EmergencyReferral::Traffic, "相撞"))
        );
        assert_eq!(
            emergency("有人持刀抢劫").map(|e| e.0),
            Some(EmergencyReferral::Police)
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("强烈建议在这里增设公交站").0, Kind::Suggestion);
        assert_eq!(kind("我要举报黑诊所").0, Kind::Report);
        assert_eq!(kind("请问公积金怎么提取？").0, Kind::Consultation);
        assert_eq!(kind("楼上装修太吵，受不了").0, Kind::Complaint);
        assert_eq!(kind("非常感谢社区网格员，特此表扬").0, Kind::Praise);
        assert_eq!(kind("老人走失了，求助").0, Kind::Help);
    }

    #[test]
    fn urgency_levels() {
        assert_eq!(urgency("整栋楼停水两天了", None).0, Urgency::Urgent);
        assert_eq!(urgency("路灯不亮", None).0, Urgency::Normal);
        assert_eq!(
            urgency("x", Some(EmergencyReferral::Fire)).0,
            Urgency::Emergency
        );
    }
}
