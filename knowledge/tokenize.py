"""Tokenisation for BM25: jieba with a consortium glossary, plus an English→Chinese term map.

jieba splits domain compounds badly out of the box (双向 / 转诊, 联席 / 会议); the glossary keeps
them whole, and the in-word character bigrams let "转诊" still match "双向转诊". English questions are mapped to the Chinese policy vocabulary so that BM25 can take
part for them too; the dense encoder is multilingual and handles the rest.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata

GLOSSARY = [
    "医联体", "医共体", "医疗联合体", "医疗共同体", "城市医疗集团", "医疗集团", "专科联盟", "远程医疗协作网",
    "双向转诊", "上转", "下转", "联席会议", "理事会", "理事长", "副理事长", "例会", "进修", "下派", "坐诊",
    "绿色通道", "家庭医生", "签约服务", "分级诊疗", "基层首诊", "急慢分治", "上下联动", "牵头医院", "成员单位",
    "核心医院", "卫生院", "社区卫生服务中心", "对口支援", "对口帮扶", "多点执业", "医保支付", "总额付费",
    "检查检验", "结果互认", "消毒供应中心", "病理检验中心", "影像诊断中心", "远程会诊", "绩效考核",
    "慢性病", "康复", "护理院", "医养结合", "公共卫生", "疾控", 
    "联合查房", "规培", "轮训", "巡诊", "义诊", "会诊", "专家团队", "县域",
    "同质化", "紧密型", "联系人", "负责人", "办公室主任", "签约医生",
]

# English phrases → Chinese policy terms (longest phrases first when matching).
EN_ZH = {
    "two-way referral": "双向转诊", "two way referral": "双向转诊", "referral": "转诊", "refer": "转诊",
    "upward": "上转", "downward": "下转", "green channel": "绿色通道", "fast track": "绿色通道",
    "joint meeting": "联席会议", "board of directors": "理事会", "board": "理事会", "council": "理事会",
    "chairman": "理事长", "vice chairman": "副理事长", "director": "主任", "regular meeting": "例会",
    "medical consortium": "医联体", "consortium": "医联体", "medical alliance": "医联体",
    "medical community": "医共体", "county": "县域", "medical group": "医疗集团", "hospital group": "医疗集团",
    "specialist alliance": "专科联盟", "specialty alliance": "专科联盟", "telemedicine": "远程医疗",
    "remote consultation": "远程会诊", "training": "进修 培训", "further study": "进修", "advanced study": "进修",
    "seconded": "下派", "secondment": "下派", "dispatched": "下派", "outpatient clinic": "坐诊",
    "family doctor": "家庭医生", "contracted": "签约", "signing": "签约", "coverage": "覆盖率",
    "tiered": "分级诊疗", "hierarchical": "分级诊疗", "primary care": "基层", "grassroots": "基层",
    "township": "乡镇卫生院", "community health": "社区卫生服务中心",
    "health center": "卫生院 卫生服务中心", "health centre": "卫生院 卫生服务中心", "health station": "卫生服务站 卫生室", "member": "成员单位",
    "lead hospital": "牵头医院", "core hospital": "核心医院", "insurance": "医保", "payment": "支付",
    "chronic": "慢性病", "prescription": "处方 配药", "medicine": "药品 配药", "rehabilitation": "康复",
    "elderly": "老年 养老", "nursing": "护理", "meeting": "会议", "how often": "每年 定期", "frequency": "每年 定期",
    "contact": "联系人", "contact person": "联系人", "office": "办公室", "goal": "目标", "target": "目标",
    "principle": "原则", "rights": "权利", "obligations": "义务", "duties": "职责",
    "assessment": "考核", "performance": "绩效", "information platform": "信息平台", "emergency": "急救",
    "stroke": "卒中", "chest pain": "胸痛", "trauma": "创伤", "pathology": "病理", "imaging": "影像",
    "laboratory": "检验", "disinfection": "消毒供应", "mutual recognition": "互认", "results": "结果",
    "priority": "优先", "patients": "患者", "patient": "患者", "doctor": "医师 医生", "physician": "医师",
    "nurse": "护士", "staff": "人员", "hospital": "医院", "clinic": "诊所 卫生所", "standard": "标准",
    "criteria": "标准", "condition": "条件", "requirement": "要求", "join": "加入", "sign": "签约",
    "years": "年", "year": "年", "work": "工作", "period": "期间", "stay": "工作",
    "platform": "平台", "group": "集团", "center": "中心", "centre": "中心",
    "oilfield": "油田",
    "term": "任期", "chair": "理事长", "head": "负责人", "leader": "组长",
    "service": "服务", "treatment": "治疗 诊疗", "examination": "检查", "admission": "住院",
    "hospitalization": "住院", "hospitalisation": "住院", "diagnosis": "诊断", "quota": "名额",
    "fee": "费用 收费", "cost": "费用", "free": "免费 免收", "salary": "薪酬 工资", "pay": "薪酬 绩效",
    "promotion": "晋升", "professional title": "职称", "month": "月", "day": "天", "rule": "规定 制度",
    "policy": "政策 制度", "responsibility": "职责", "management": "管理", "system": "制度 体系",
    "establish": "建立", "set up": "建立", "share": "共享", "resource": "资源", "equipment": "设备",
    "drug": "药品", "long prescription": "长处方", "private": "民营", "license": "执业", "practice": "执业",
    "primary level": "基层", "grassroots level": "基层", "village": "村", "town": "乡镇", "mission": "任务",
    "objective": "目标", "measure": "措施", "supervision": "督导 监管", "data": "数据 信息",
    "lead": "牵头 核心", "leading": "牵头 核心", "unchanged": "不变",
    "one": "一", "two": "两 二", "three": "三", "four": "四", "five": "五", "six": "六", "seven": "七",
    "eight": "八", "nine": "九", "ten": "十", "first": "首", "vice": "副", "deputy": "副",
}

# The spoken question register: words that say who asks and how, never what about — pronouns of
# the asker's side (咱们, 俺们, 我们这), particles and hedges (到底, 一般), modal phrasing (能不能,
# 要不要) and interrogatives (几回, 多少, 啥, 咋). A class of words, not of questions: a physician
# typing on a phone uses them in any question.
REGISTER_WORDS = set(
    "咱 咱们 俺 俺们 咱这 咱这儿 我们这 我们这儿 我们这边 这儿 这边 那边 人家 大家 本人 自己 "
    "一共 总共 一般 大概 大约 到底 究竟 具体 主要 通常 平时 现在 目前 今后 以后 的话 的时候 时候 "
    "有没有 是不是 能不能 要不要 会不会 该不该 可不可以 需不需要 行不行 对不对 好不好 "
    "得了 就是 还是 或者 还有 另外 那么 这种 那种 这个 那个 这些 那些 一下 一点 有点 多会儿".split()
)  # interrogatives (几回, 哪天, 啥时候, 咋弄, 管啥 …) are matched by ``_INTERROGATIVE`` below
_INTERROGATIVE = re.compile(r"^(几|多少|多久|多长|多大|哪|啥|咋|怎|什么|何|谁)|[啥咋]$")
# A bare quantity ("一次", "每年", "三名"): how much or how often is asked or said, and the policy
# may write it in digits ("1次"); the subject is elsewhere in the question.
_QUANTITY = re.compile(r"^[一二两三四五六七八九十百几每半]+[次年月日天周届个名家人项条位回趟]$")

# Everyday (colloquial) register → the words the policies use, by class: people (大夫 → 医师),
# institutions (小医院 → 基层医疗机构, 大医院 → 上级医院), care (小病 → 常见病), money (交钱 → 费用),
# movement of patients (往上转 → 上转). A question word found as any of its policy forms counts
# as covered (``Query``); the forms also join the search.
REGISTER_SYNONYMS = {
    # people
    "大夫": "医师 医生 医务人员", "医生": "医师 医务人员", "护士": "护理人员", "病号": "患者",
    "老病号": "慢性病 患者", "病人": "患者", "老人": "老年人 老年", "领导": "负责人 院领导 管理人员",
    "专家": "专家 骨干 高年资", "村医": "乡村医生 村卫生室",
    # institutions
    "小医院": "基层医疗机构 下级医院 卫生院", "基层医院": "基层医疗机构 卫生院", "大医院": "上级医院 三级医院 牵头医院 核心医院",
    "城里医院": "上级医院 城市医院", "诊所": "卫生所 卫生室 诊所", "小诊所": "卫生所 卫生室 基层医疗机构",
    "社区": "社区卫生服务中心", "乡镇": "乡镇卫生院", "卫生站": "卫生室 卫生所", "私立": "民营 社会办",
    "私立医院": "民营医院 社会办医疗机构", "公立医院": "公立医院 公立医疗机构",
    # care
    "小病": "常见病 多发病", "大病": "急危重症 疑难复杂", "慢病": "慢性病", "看病": "就诊 诊疗 就医",
    "开药": "处方 配药 用药", "拿药": "配药 用药", "住院费": "住院 费用", "检查": "检查 检验",
    # money
    "交钱": "费用 收费", "花钱": "费用", "收钱": "收费 费用", "多少钱": "费用 收费 标准", "工钱": "薪酬 绩效",
    "报销": "医保 支付 报销",
    # patients moving, staff moving
    "往上转": "上转 向上转诊", "转上去": "上转 向上转诊", "送上去": "上转 向上转诊", "往下转": "下转 向下转诊",
    "转下来": "下转 向下转诊", "转下去": "下转 向下转诊", "转院": "转诊", "下乡": "下沉 基层 下派",
    "派人": "下派 派驻 选派",
    # time and meetings
    "开会": "会议 召开", "一届": "任期 每届", "几回": "次", "好处": "优先 倾斜 优惠",
}

# Everyday words in questions → the words the policies use. Applied to questions only.
QUERY_SYNONYMS = {
    "病人": "患者", "病患": "患者", "下转": "向下转诊 转诊至下级", "上转": "向上转诊 转诊至上级",
    "转院": "转诊", "多久": "每年 每季度 定期 年限", "多长时间": "每年 定期 年限", "几次": "每年 次",
    "开会": "会议", "谁负责": "负责人 负责", "联系谁": "联系人", "电话": "联系方式", "钱": "费用 经费",
    "费用": "费用 收费", "医保报销": "医保支付", "报销": "医保支付", "培训": "培训 进修 轮训",
    "派驻": "下派 派出", "支援": "支援 帮扶 下沉", "基层医院": "基层医疗机构 卫生院", "大医院": "三级医院 牵头医院",
    "要求": "要求 标准 条件",
}

STOPWORDS = set(
    "的 了 和 与 及 或 在 是 为 对 由 等 以 将 把 被 从 向 于 之 其 这 那 有 要 可 能 会 个 中 上 下 "
    "吗 呢 吧 啊 么 什么 怎么 怎样 如何 哪些 哪个 哪里 哪 多少 几 是否 有没有 请问 一下 我们 我 你 他 她 它 "
    "规定 规定了 问题 情况 方面 相关 有关 进行 开展 需要 应当 应该 可以 "
    # interrogatives: they say what kind of answer is wanted, not what it is about
    "多久 多长 多长时间 何时 什么时候 哪儿 谁 为何 为什么 怎么办 咋 咋办 几时 是不是 能否 能不能 么".split()
)
EN_STOPWORDS = set(
    "a an the of to in on for and or is are was were be what which who whom how when where why does do "
    "did our my your their its it this that these those with by at as from about into can should must "
    "there any some please tell me i we you get gets got have has had receive receives provide provided "
    "much many long often kind kinds type types way ways thing things say says said".split()
)

_CJK_WORD = re.compile(r"^[\u3400-\u9fff]+$")
_PUNCT = re.compile(r"^[\W_]+$", re.UNICODE)
_EN_WORD = re.compile(r"[a-z][a-z\-']*")
_lock = threading.Lock()
_ready = False


def _init() -> None:
    global _ready
    if _ready:
        return
    with _lock:
        if _ready:
            return
        import jieba

        jieba.setLogLevel(logging.WARNING)
        for word in GLOSSARY:
            jieba.add_word(word, freq=200000)
        jieba.initialize()
        _ready = True


def _fold(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).lower()
    # spaces between CJK characters are layout noise; spaces between Latin words are real
    return re.sub(r"(?<=[^\x00-\x7f])\s+|\s+(?=[^\x00-\x7f])", "", folded)


def _keep(tok: str) -> bool:
    return bool(tok) and tok not in STOPWORDS and tok not in EN_STOPWORDS and not _PUNCT.match(tok)


# What kind of answer a question wants, and how a policy sentence that gives it looks: a class of
# question words each (frequency, duration, person, number, place), not any one question.
_NUM = r"[\d一二两三四五六七八九十百千半]"
ANSWER_CUES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    (re.compile(r"多久|多长时间|几次|多少次|频率|how often|how frequent", re.I),
     re.compile(rf"每{_NUM}?(年|季度|季|半年|月|周|届)|至少.{{0,8}}{_NUM}+\s*次|定期|{_NUM}+\s*次")),
    (re.compile(r"多久|多长|期限|任期|年限|how long|term", re.I),
     re.compile(rf"{_NUM}+\s*(年|个月|月|天|周|日)|任期|期限|满{_NUM}")),
    (_NEEDS_PERSON := re.compile(r"谁|哪位|由谁|\bwho(m|se)?\b", re.I),
     _HAS_PERSON := re.compile(r"由.{1,30}(担任|兼任|负责|牵头)|组成|构成|担任|兼任|任组长|任主任|参加|参与|出席"
                               r"|[：:]\s*[\u4e00-\u9fff]{2,4}(?:[，,、；;\s]|$)")),
    (re.compile(r"多少钱|收费|费用|工资|薪|补助|补贴|报销|how much|fee|cost|salary|pay", re.I),
     re.compile(rf"{_NUM}+\s*(元|万元)|免费|免收|减免|不收|收费标准|费用标准|按.{{0,12}}(标准|规定)(收取|执行|结算)|医保")),
    (re.compile(r"多少|几[个名家项条位人种张所]|比例|百分之|how many|what %|percentage|share", re.I),
     re.compile(rf"{_NUM}+\s*(名|个|家|项|条|位|人|种|张|所|%|％|成)|百分之|比例")),
    (re.compile(r"哪里|哪儿|在哪|设在|where", re.I), re.compile(r"设在|设于|位于|设立在|办公室设")),
)


# Questions that can only be answered with a number of something, or an amount of money: a quote
# without one does not answer them, however close its subject (荆氏医院有多少张床位？).
_NEEDS_COUNT = re.compile(r"(?<!哪)(几|多少)\s*[个名家项条位人种张所床]|how many", re.I)  # not 哪几种: a list
_HAS_COUNT = re.compile(rf"{_NUM}+\s*[个名家项条位人种张所床%％]|百分之|{_NUM}+\s*成|[：:][ \t]*\d+(?![.．]\d)")  # …or a table cell
# (a table cell "人数：24", not the clause number "7.2.1" on the line after a "下列权利：")
_NEEDS_MONEY = re.compile(r"多少钱|(工资|薪酬|补助|补贴|费用|收费|报销).{0,4}(多少|几)|how much", re.I)
_HAS_MONEY = re.compile(rf"{_NUM}+\s*(元|万元)|免费|免收|减免|不收|收费标准|费用标准")


def unanswered_kind(question: str, quoted: str) -> str | None:
    """"count" / "money" / "person" when ``question`` needs a number of things, an amount of money
    or who someone is, and the quoted text holds none (a clause that a role exists does not say
    who holds it); None otherwise."""
    if _NEEDS_MONEY.search(question) and not _HAS_MONEY.search(quoted):
        return "money"
    if _NEEDS_PERSON.search(question) and not _HAS_PERSON.search(quoted):
        return "person"
    if _NEEDS_COUNT.search(question) and not _HAS_COUNT.search(quoted):
        return "count"
    return None


def answer_cue(question: str) -> re.Pattern[str] | None:
    """A pattern that sentences answering ``question`` tend to match, or None."""
    cues = [cue for asks, cue in ANSWER_CUES if asks.search(question)]
    if not cues:
        return None
    return re.compile("|".join(f"(?:{c.pattern})" for c in cues))


def general_rarity(word: str) -> float:
    """How specific ``word`` is in general Chinese, from jieba's dictionary frequencies: about 0.2
    for everyday words (一年, 门口, 好处), 1.0 for rare or unlisted ones (停车场, 布洛芬).

    A word no policy uses is evidence that a question is off-topic in proportion to this: an
    everyday word is just how someone talks; a specific one is what they talk about."""
    if not _CJK_WORD.match(word):
        return 1.0  # English: no frequency list here; count it as specific
    _init()
    import jieba

    freq = jieba.dt.FREQ.get(word, 0)
    if not freq:
        return 1.0
    rarity = math.log(jieba.dt.total / freq)
    return max(0.2, min(1.0, (rarity - 8.0) / 5.0))


def concept_word(concept: list[frozenset[str]]) -> str:
    """The word a question concept (a list of token-set forms, ``service.Query``) was made from."""
    return next(iter(sorted(concept[0])))


def is_register_word(word: str) -> bool:
    """A word of the question register (pronoun, particle, interrogative): how, not what."""
    return word in REGISTER_WORDS or bool(_CJK_WORD.match(word) and (_INTERROGATIVE.search(word)
                                                                      or _QUANTITY.match(word)))


def register_forms(word: str) -> list[str]:
    """The policy words an everyday word stands for (``大夫`` → 医师, 医生, 医务人员)."""
    return REGISTER_SYNONYMS.get(word, "").split()


def inner_bigrams(word: str) -> list[str]:
    """Character bigrams inside a Chinese word, prefixed so they never collide with words."""
    if len(word) < 2 or not _CJK_WORD.match(word):
        return []
    return ["#" + word[i : i + 2] for i in range(len(word) - 1)]


def tokenize(text: str) -> list[str]:
    """Search-mode jieba words of ``text`` (NFKC-folded) plus in-word character bigrams.

    The bigrams make matching independent of how jieba happened to segment a compound ("市医联会"
    vs "医联体"); they never cross a word boundary (that would only add noise). Stop words out.
    """
    _init()
    import jieba

    out = []
    for tok in jieba.lcut_for_search(_fold(text)):
        tok = tok.strip()
        if not _keep(tok):
            continue
        out.append(tok)
        if len(tok) >= 3:
            out.extend(inner_bigrams(tok))
    return out


def sub_words(word: str) -> list[str]:
    """The shorter dictionary words inside ``word`` ("合作方式" → 合作, 方式), from jieba's
    search mode; empty when it has none."""
    _init()
    import jieba

    return [t for t in jieba.lcut_for_search(word) if t != word and len(t) >= 2 and _keep(t)]


def words(text: str) -> list[str]:
    """The distinct words of a question (precise-mode jieba, no stop words, at least two
    characters): what it is about."""
    _init()
    import jieba

    seen: list[str] = []
    for tok in jieba.lcut(_fold(text)):
        tok = tok.strip()
        # one-character words ("开", "排", "交") are verbs and particles that say little; words
        # of the question register (咱们, 几回, 咋) say how one asks, not what about
        if len(tok) >= 2 and _keep(tok) and not is_register_word(tok) and tok not in seen:
            seen.append(tok)
    return seen


def expand_query(question: str) -> str:
    """The question plus the policy vocabulary for its everyday words."""
    extra = [v for k, v in QUERY_SYNONYMS.items() if k in question]
    extra += [v for k, v in REGISTER_SYNONYMS.items() if len(k) >= 2 and k in question]
    return question + (" " + " ".join(extra) if extra else "")


def english_concepts(text: str) -> list[tuple[str, str]]:
    """The units of meaning of an English question: (English phrase, Chinese policy terms).

    Known phrases ("green channel") carry their Chinese terms; other content words carry "".
    A unit counts as found in a clause when either its English words (English policies) or its
    Chinese terms (Chinese policies) are there; a unit with neither ("Wi-Fi password") is what
    makes an off-topic English question look off-topic.
    """
    lowered = unicodedata.normalize("NFKC", text).lower()
    units: list[tuple[str, str]] = []
    for phrase in sorted(EN_ZH, key=len, reverse=True):
        if re.search(rf"\b{re.escape(phrase)}", lowered):
            units.append((phrase, EN_ZH[phrase]))
            lowered = re.sub(rf"\b{re.escape(phrase)}[a-z']*", " ", lowered)
    units += [(w, "") for w in _EN_WORD.findall(lowered) if w not in EN_STOPWORDS and len(w) > 1]
    return units
