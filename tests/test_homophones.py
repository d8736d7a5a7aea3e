"""Pinyin-IME homophone typos corrected by sound against the real sample corpus (issue #8).

The typo questions below were written by hand, one IME slip each, across meeting names, training
kinds, institution kinds, question words and verbs; none of them is listed in
knowledge/homophones.py, which works by pinyin only. The clean questions must come out unchanged:
colloquial ones, ones about things the policies never mention, and traps where a same-sounding
corpus word exists (事实/实施, 在培训/再培训, 专家团对/专家团队, 会诊是/会诊室, 卫生员 alone).
HARD_TYPOS are slips the corrector leaves alone on purpose (the slip is itself a dictionary word,
or fixing it would cut a word of the question): they must never be miscorrected.
bench/bench_homophones.py prints precision and recall over all these lists.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from knowledge.homophones import QUESTION_WORDS, HomophoneCorrector, char_readings

SAMPLES = Path(__file__).resolve().parents[1] / "knowledge" / "samples"

# (typed question, expected question after correction)
TYPO_QUESTIONS: list[tuple[str, str]] = [
    # the examples
    ("连席会议多就开一次？", "联席会议多久开一次？"),
    ("去上级医院近修要交钱吗", "去上级医院进修要交钱吗"),
    ("尽修期间有什么待遇？", "进修期间有什么待遇？"),
    ("理事汇由哪些人组成", "理事会由哪些人组成"),
    ("专家来乡镇做诊吗", "专家来乡镇坐诊吗"),
    ("座诊医生怎么安排", "坐诊医生怎么安排"),
    ("双向专诊的流程是甚么", "双向转诊的流程是什么"),
    ("下牌医生有补助吗", "下派医生有补助吗"),
    ("远程汇诊怎么申请", "远程会诊怎么申请"),
    ("乡镇卫生员能加入医联体吗", "乡镇卫生院能加入医联体吗"),
    ("三鸡三严培训谁来组织", "三基三严培训谁来组织"),
    # meeting names and offices
    ("联席会义每年开几次", "联席会议每年开几次"),
    ("工作立会多久开一回", "工作例会多久开一回"),
    ("理事张由谁担任？", "理事长由谁担任？"),
    ("副理式长有几个", "副理事长有几个"),
    ("管理委员汇负责什么", "管理委员会负责什么"),
    ("联系会议由谁召集", "联席会议由谁召集"),
    # training kinds
    ("规陪医生能优先接收吗", "规培医生能优先接收吗"),
    ("三基三言考核怎么搞", "三基三严考核怎么搞"),
    ("临床带交老师有补贴吗", "临床带教老师有补贴吗"),
    ("可以去短期学细吗", "可以去短期学习吗"),
    ("医护人员论训怎么安排", "医护人员轮训怎么安排"),
    ("学术讲坐多久一次", "学术讲座多久一次"),
    ("临床代教怎么安排", "临床带教怎么安排"),
    # institution kinds
    ("乡镇卫生元的医生能去进修吗", "乡镇卫生院的医生能去进修吗"),
    ("社区卫生服务中新怎么转诊", "社区卫生服务中心怎么转诊"),
    ("牵投医院是哪家", "牵头医院是哪家"),
    ("成员单为有哪些义务", "成员单位有哪些义务"),
    ("专科联萌有哪些", "专科联盟有哪些"),
    ("咱们这个医联题是啥时候成立的", "咱们这个医联体是啥时候成立的"),
    ("紧密型医供体怎么建", "紧密型医共体怎么建"),
    ("城市医疗急团有几家医院", "城市医疗集团有几家医院"),
    ("村卫生事归谁管", "村卫生室归谁管"),
    # question words
    ("为神么要搞双向转诊", "为什么要搞双向转诊"),
    ("例会多酒开一次", "例会多久开一次"),
    ("进修要多常时间", "进修要多长时间"),
    # verbs
    ("下拍到基层的医生待多久", "下派到基层的医生待多久"),
    ("联合查防怎么开展", "联合查房怎么开展"),
    ("双向转珍有绿色通道吗", "双向转诊有绿色通道吗"),
    ("家庭医生前约服务怎么收费", "家庭医生签约服务怎么收费"),
    ("对口支缘的人员怎么派", "对口支援的人员怎么派"),
    ("对口邦扶有哪些方式", "对口帮扶有哪些方式"),
    ("多点执页需要备案吗", "多点执业需要备案吗"),
    ("检查检验结果互任吗", "检查检验结果互认吗"),
    ("分级诊了的目标是什么", "分级诊疗的目标是什么"),
    ("基层首真怎么落实", "基层首诊怎么落实"),
    ("转诊的绿色通到在哪", "转诊的绿色通道在哪"),
    ("预越诊疗怎么弄", "预约诊疗怎么弄"),
    ("绩效考合由谁负责", "绩效考核由谁负责"),
    # more, written in one go with the second half of the clean list
    ("理事汇的理事有几个", "理事会的理事有几个"),
    ("进修生宿舍怎么申情", "进修生宿舍怎么申请"),
    ("专家做诊时间表", "专家坐诊时间表"),
    ("基层医生能去三甲医院近修吗", "基层医生能去三甲医院进修吗"),
    ("集团内检查结果互人吗", "集团内检查结果互认吗"),
    ("有没有远程心电诊段", "有没有远程心电诊断"),
    ("医联体的张程在哪看", "医联体的章程在哪看"),
    ("考合不合格怎么处理", "考核不合格怎么处理"),
    ("成员单为可以退出吗", "成员单位可以退出吗"),
    ("理是长是谁", "理事长是谁"),
    ("市级医院对口邦扶县医院吗", "市级医院对口帮扶县医院吗"),
    ("远程会珍收费标准是什么", "远程会诊收费标准是什么"),
    ("慢病患者长处方能开多就", "慢病患者长处方能开多久"),
    ("县域医供体和城市医疗集团有啥区别", "县域医共体和城市医疗集团有啥区别"),
    ("德阳的连席会议每年开几次", "德阳的联席会议每年开几次"),
]

# Slips left alone by design; they must come out either fixed or unchanged, never otherwise.
HARD_TYPOS: list[tuple[str, str]] = [
    ("哪家医院是千头的", "哪家医院是牵头的"),  # 千头 is a dictionary word
    ("双向转诊的病人医保怎么包", "双向转诊的病人医保怎么报"),  # 包 stands alone
    ("联系会议纪要谁来写", "联席会议纪要谁来写"),  # 联系会议 would cut 会议纪要
    ("规培学员可以跨院论转吗", "规培学员可以跨院轮转吗"),  # 轮转 is not in the corpus
    ("家庭医生前约率要求多少", "家庭医生签约率要求多少"),  # 前 stands alone; 医生签约 cuts 家庭医生
    ("进修学系费用免吗", "进修学习费用免吗"),  # 学系 is a dictionary word
    ("医学影响检查能互认吗", "医学影像检查能互认吗"),
    ("卫生员能加入医联体吗", "卫生院能加入医联体吗"),  # 卫生员 is a word: no context says otherwise
]

# Questions typed right: they must come out exactly as typed.
CLEAN_QUESTIONS: list[str] = [
    "联席会议多久开一次？",
    "理事会由哪些单位组成？",
    "进修期间免收学费吗？",
    "咱们医院咋加入医联体？",
    "下派医生有啥补助？",
    "双向转诊的绿色通道怎么走？",
    "医院停车场收费吗？",
    "下派期间工资谁发？",
    "年终奖怎么算？",
    "手术室能共用吗？",
    "咱们这儿的专家啥时候来坐诊？",
    "远程会诊咋申请？",
    "规培生能去乡镇卫生院吗？",
    "三基三严培训多久一次？",
    "理事长任期几年？",
    "成员单位有哪些义务？",
    "牵头医院是哪家？",
    "村卫生室归谁管？",
    "医保支付方式有啥变化？",
    "家庭医生签约服务费多少钱？",
    "上转病人要排队吗？",
    "检查结果能互认吗？",
    "食堂几点开饭？",
    "在培训期间有补贴吗？",
    "专家团对基层医院的帮扶有哪些？",
    "会诊是什么意思？",
    "我想问一下进修要多长时间",
    "护士能不能多点执业？",
    "急诊科的值班表在哪看？",
    "请假要找谁批？",
    "新冠疫苗在哪打？",
    "咱们科室的绩效咋算的？",
    "慢性病患者能在社区拿药吗？",
    "下级医院的医生能来上级医院学习吗？",
    "胸痛中心在哪栋楼？",
    "食宿费用能报销吗？",
    "这个月的排班表出来没？",
    "临床带教老师有补贴吗？",
    "分级诊疗的目标是什么？",
    "有没有针对老年人的优惠？",
    "医联体内的药品目录统一吗？",
    "院长办公会什么时候开？",
    "咋联系信息科？",
    "啥是紧密型医共体？",
    "年底评优有名额吗？",
    "对口支援要去多久？",
    "急救车从哪里出发？",
    "实施方案是哪年发的？",
    "事实上转诊率高吗？",
    "职工体检每年一次吗？",
    "进修回来要写总结吗？",
    "他们说的互联网医院是啥？",
    "医生的职称晋升有啥倾斜政策？",
    "德阳市人民医院的联系人是谁？",
    "松原的医疗集团有几家成员？",
    "临沧和资阳的方案有啥区别？",
    "张店区的医共体啥时候成立的？",
    "WeCom上怎么提交3份材料？",
    "ICU床位紧张怎么办？",
    "2024年的考核指标有哪些？",
    "俺们小医院的大夫去人民医院进修要交钱不？",
    "咱这联席会一年得开几回啊？",
    "往上转的病人有没有啥绿色通道啊",
    "外科手术室的护士长是谁？",
    "食堂饭卡丢了咋办？",
    "医院有没有职工宿舍？",
    "乡镇的卫生员归谁管？",
    "王主任的电话是多少",
    "资阳的联系人是谁",
    "医院食堂的菜单在哪看",
    "请问进修的时候可以带薪吗",
    "咱医院那个下派的名额还有吗",
    "会议纪要在哪下载",
    "医保报销比例是多少",
    "急诊绿色通道24小时开放吗",
    "转诊单怎么填",
    "预约挂号怎么弄",
    "那些医院可以转诊",
    "哪家医院是牵头的",
    "理事会的理事有几个",
    "进修生宿舍怎么申请",
    "专家坐诊时间表",
    "我是村医能参加培训吗",
    "基层医生能去三甲医院进修吗",
    "上级医院的专家多久下来一次",
    "双向转诊的病人医保怎么报",
    "集团内检查结果互认吗",
    "有没有远程心电诊断",
    "卫生院的设备能共享吗",
    "下转的病人谁来随访",
    "医联体的章程在哪看",
    "考核不合格怎么处理",
    "牵头医院有什么责任",
    "成员单位可以退出吗",
    "我们单位想加入怎么办",
    "理事长是谁",
    "联席会议纪要谁来写",
    "市级医院对口帮扶县医院吗",
    "进修期间工资照发吗",
    "规培学员可以跨院轮转吗",
    "远程会诊收费标准是什么",
    "家庭医生签约率要求多少",
    "慢病患者长处方能开多久",
    "县域医共体和城市医疗集团有啥区别",
    "张店区人民医院在集团里是什么角色",
    "临沧市人民医院的联系电话",
    "德阳的联席会议每年开几次",
]


@pytest.fixture(scope="module")
def corrector() -> HomophoneCorrector:
    texts = [p.read_text(encoding="utf-8") for p in sorted(SAMPLES.glob("*.txt"))]
    return HomophoneCorrector(texts, extra_words=QUESTION_WORDS)


def test_lists_are_big_enough():
    own = TYPO_QUESTIONS[11:]
    assert len(own) >= 25 and len(CLEAN_QUESTIONS) >= 40
    for typed, expected in TYPO_QUESTIONS + HARD_TYPOS:
        assert typed != expected and len(typed) == len(expected)
        for a, b in zip(typed, expected):  # each slip is a same-pinyin character
            assert a == b or set(char_readings(a)) & set(char_readings(b)), (a, b)


@pytest.mark.parametrize(("typed", "expected"), TYPO_QUESTIONS, ids=[t for t, _ in TYPO_QUESTIONS])
def test_typo_is_corrected(corrector, typed, expected):
    fixed, changes = corrector.correct(typed)
    assert fixed == expected, changes
    assert changes and all(len(a) == len(b) and a != b for a, b in changes)


@pytest.mark.parametrize(("typed", "expected"), HARD_TYPOS, ids=[t for t, _ in HARD_TYPOS])
def test_hard_typo_is_never_miscorrected(corrector, typed, expected):
    assert corrector.correct(typed)[0] in (typed, expected)


@pytest.mark.parametrize("question", CLEAN_QUESTIONS)
def test_clean_question_is_unchanged(corrector, question):
    assert corrector.correct(question) == (question, [])


def test_replacements_report_what_was_typed(corrector):
    fixed, changes = corrector.correct("连席会议多就开一次？理事汇呢？")
    assert fixed == "联席会议多久开一次？理事会呢？"
    assert changes == [("连席会议", "联席会议"), ("多就", "多久"), ("理事汇", "理事会")]


def test_reported_replacement_is_the_corrected_word(corrector):
    assert corrector.correct("联系会议由谁召集")[1] == [("联系会议", "联席会议")]
    assert corrector.correct("乡镇卫生员能加入吗")[1] == [("卫生员", "卫生院")]


def test_latin_digits_and_punctuation_untouched(corrector):
    q = "Q3: 连席会议 2 次/年? see https://example.org/近修 — OK"
    fixed, _ = corrector.correct(q)
    assert fixed == "Q3: 联席会议 2 次/年? see https://example.org/进修 — OK"
    for q in ("", "   ", "abc 123", "？！", "会", "IMEs type 2.5 ms"):
        assert corrector.correct(q) == (q, [])


def test_corpus_words_and_names_never_change(corrector):
    for q in ("松原吉林油田医院", "德阳市人民医院", "临沧市", "张店区", "资阳市", "理事会", "进修", "坐诊"):
        assert corrector.correct(q) == (q, [])


def test_whole_dictionary_words_stay(corrector):
    # real words that sound like corpus words: the question may mean them
    for q in ("卫生员能参加吗", "手术室在哪", "事实如此吗", "那些医院呢", "锦绣前程"):
        assert corrector.correct(q) == (q, [])


def test_two_character_span_needs_one_same_character():
    c = HomophoneCorrector(["实施方案已印发。", "按实施方案执行。"])
    assert c.correct("是时") == ("是时", [])  # both characters differ: a different word
    assert c.correct("实始")[0] == "实施"
    assert c.correct("按实始方案")[0] == "按实施方案"


def test_extra_words_are_correct_and_candidates():
    c = HomophoneCorrector(["联席会议每年召开一次。"], extra_words=["多久"])
    assert c.correct("联席会议多久召开") == ("联席会议多久召开", [])
    assert c.correct("联席会议多酒召开")[0] == "联席会议多久召开"
    assert HomophoneCorrector(["联席会议每年召开一次。"]).correct("联席会议多酒召开")[1] == []


def test_heteronyms():
    assert {"hui", "kuai"} <= set(char_readings("会"))
    assert {"xing", "hang"} <= set(char_readings("行"))
    assert char_readings("需") == ("xu",)  # archaic readings are not used
    c = HomophoneCorrector(["由商业银行代发。会计核算按规定执行。"])
    assert c.correct("商业银航代发")[0] == "商业银行代发"
    assert c.correct("快计核算")[0] == "会计核算"


def test_only_units_of_the_corpus_are_candidates():
    # 转诊绿 only ever occurs inside 转诊绿色通道: it is no unit, 转诊率 stays
    c = HomophoneCorrector(["开通转诊绿色通道。", "转诊绿色通道要畅通。"])
    assert c.correct("转诊率高吗") == ("转诊率高吗", [])
    assert c.correct("开通转诊绿涩通道")[0] == "开通转诊绿色通道"


def test_refused_longer_reading_blocks_a_shorter_other_one():
    # 三基三严 is no unit here (always followed by 培训), so 三鸡三严 is left alone, and the
    # shorter 三鸡 → 三级 (a unit) may not contradict the longer reading
    c = HomophoneCorrector(["三基三严培训要抓好。", "三基三严培训每年一次。", "三级医院牵头。", "三级医院，二级医院。"])
    assert c.correct("三鸡三严怎么考") == ("三鸡三严怎么考", [])


def test_fuzzy_pairs_are_optional(corrector):
    texts = [p.read_text(encoding="utf-8") for p in sorted(SAMPLES.glob("*.txt"))]
    fuzzy = HomophoneCorrector(texts, extra_words=QUESTION_WORDS, fuzzy=True)
    assert corrector.correct("双向钻诊怎么办") == ("双向钻诊怎么办", [])  # zuan ≠ zhuan
    assert fuzzy.correct("双向钻诊怎么办")[0] == "双向转诊怎么办"
    assert fuzzy.correct("联席会议多久开一次？") == ("联席会议多久开一次？", [])


def test_counts_and_size(corrector):
    assert corrector.count("联席会议") == 4
    assert corrector.count("连席会议") == 0
    assert corrector.count("会") == 0  # single characters are not indexed
    assert 0 < corrector.nbytes < 4 * 2**20 and len(corrector) > 10_000


def test_empty_corpus():
    c = HomophoneCorrector([])
    assert c.correct("连席会议") == ("连席会议", [])
    assert len(c) == 0


def test_fast_per_question(corrector):
    questions = [t for t, _ in TYPO_QUESTIONS] + CLEAN_QUESTIONS
    for q in questions:  # warm the per-character caches
        corrector.correct(q)
    times = []
    for q in questions * 3:
        t = time.perf_counter()
        corrector.correct(q)
        times.append(time.perf_counter() - t)
    times.sort()
    assert times[len(times) // 2] < 0.002


def test_romanised_names_are_read_by_sound_against_the_corpus(corrector):
    """English questions name townships and hospitals in pinyin; no list of names is kept."""
    assert corrector.romanised("Hadashan") == "哈达山"
    assert corrector.romanised("hutian") == "湖田"
    assert corrector.romanised("Lincang") == "临沧"
    # the spelling fixes the length, the corpus the characters: a name the corpus lacks is None
    assert corrector.romanised("Chaoyang") is None
    # plain English words are no pinyin reading of the corpus
    for word in ("meeting", "council", "change", "china", "plan", "hospital"):
        assert corrector.romanised(word) is None, word
    assert corrector.romanised("ab") is None and corrector.romanised("中文") is None


def test_a_reading_two_corpus_names_share_is_not_guessed():
    both = HomophoneCorrector(["雁江城区的医院和沿江社区卫生服务中心。雁江。沿江。"])
    assert both.romanised("yanjiang") is None
    one = HomophoneCorrector(["雁江城区的医院。雁江区。"])
    assert one.romanised("yanjiang") == "雁江"


def test_the_shipped_readings_table_is_what_the_pinned_pypinyin_gives():
    """Answering reads character readings from knowledge/data/char_readings.txt, not from
    pypinyin's dictionaries (tens of MB a worker); it must say exactly what pypinyin says.
    After upgrading pypinyin: ``python -m knowledge.homophones`` rewrites it."""
    from knowledge.homophones import READINGS_TABLE, readings_table_lines

    assert READINGS_TABLE.read_text(encoding="utf-8").splitlines() == readings_table_lines()
