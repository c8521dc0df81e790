"""Vocabulary and sentence templates for the fake model's filler text (English and Chinese).

English words are plain ASCII letters only, so each one counts exactly once under
agents.text.count_words; Chinese words use only U+4E00..U+9FFF ideographs, each counted once.
Templates are parsed once at import: a list of literal pieces and {slot} names.
"""
from __future__ import annotations

import re

EN = {
    "adj": """important quiet simple careful steady broad deep open local modern ancient early late
    common rare clear gentle strong subtle practical central familiar distant careful hidden
    lasting valuable complex patient honest vivid modest remarkable ordinary curious bright
    natural public private shared slow rapid quiet thoughtful gradual difficult surprising
    sensible delicate durable uneven rich narrow hopeful""".split(),
    "noun": """idea question history system community river city market garden language method
    journey tradition season pattern story choice decision result structure landscape region
    project village road memory balance tension reason purpose voice signal process practice
    habit argument chapter detail moment century harvest border network archive lesson
    craft ritual neighborhood workshop library school household economy climate""".split(),
    "nouns": """ideas questions people records cities markets gardens languages methods journeys
    traditions seasons patterns stories choices decisions results structures landscapes regions
    projects villages roads memories reasons voices signals habits arguments chapters details
    moments families teachers workers travelers readers writers students neighbors farmers
    builders skills tools rules customs""".split(),
    "verb": """shapes supports reveals changes reflects connects explains follows carries builds
    protects guides invites strengthens softens frames defines informs surrounds echoes
    deepens rewards challenges organizes balances preserves extends outlines""".split(),
    "verbb": """shape support reveal change reflect connect explain follow carry build protect
    guide invite strengthen soften frame define inform surround deepen reward challenge
    organize balance preserve extend outline remember notice consider""".split(),
    "adv": """slowly quietly steadily clearly often rarely gradually naturally carefully openly
    gently firmly plainly usually deeply""".split(),
    "prep": "in across within through beyond around beside under among toward".split(),
    "conn": [
        "However", "In practice", "Over time", "For this reason", "At the same time",
        "In many cases", "As a result", "Even so", "In the end", "For example", "Meanwhile",
        "Seen from a distance", "Above all", "In other words", "Still",
    ],
    "sub": ["because", "although", "while", "when", "since", "even though"],
}

EN_TEMPLATES = [
    "The {adj} {noun} {verb} {np} {prep} {np} .",
    "{Conn} , {np} {verb} {np} .",
    "{Topic} {verb} {nps} and {nps} .",
    "When {np} {verb} {np} , {np} {verb} {adv} .",
    "This is why {topic} matters to {nps} {prep} {np} .",
    "Many {nps} {verbb} {np} {sub} {np} {verb} {np} .",
    "{Conn} , {topic} {verb} {np} {prep} {np} , and {np} {verb} {np} .",
    "What does {np} {verbb} {prep} {topic} ?",
    "{Nps} {adv} {verbb} {np} .",
    "It is {adj} to see how {topic} {verb} {np} .",
    "The story of {topic} {verb} {np} {prep} {np} .",
    "{Sub} {np} {verb} {np} , {nps} {verbb} {np} {prep} {np} .",
    "Few {nps} {verbb} {topic} as {adv} as {nps} do .",
    "Each {noun} {verb} {np} , and each {noun} {verb} {np} in turn .",
    "{Topic} {adv} {verb} {np} .",
    "Some {nps} say that {np} {verb} {np} , but {nps} {verbb} {np} {prep} {np} .",
    "{Conn} , the {noun} of {topic} {verb} {nps} {prep} {np} .",
]

ZH = {
    "noun": """发展 社会 文化 历史 经济 技术 城市 生活 环境 教育 传统 方法 问题 变化 时代 世界
    自然 科学 艺术 旅行 记忆 故事 家庭 未来 时间 道路 风景 市场 语言 思想 精神 制度 结构 过程
    经验 价值 力量 关系 意义 方向 空间 细节 季节 村庄 河流 山川 节日 习俗 作品 人物""".split(),
    "verb": """推动 影响 改变 体现 促进 形成 展示 提供 保持 反映 带来 塑造 连接 支持 丰富 记录
    揭示 延续 凝聚 激发 守护 拓展""".split(),
    "adj": """重要的 独特的 丰富的 深刻的 新的 古老的 复杂的 温暖的 平凡的 宝贵的 鲜明的 长久的
    细腻的 开阔的 朴素的 真实的""".split(),
    "adv": "逐渐 不断 始终 往往 悄然 慢慢 深深 一直 日益 默默".split(),
    "conn": "然而 因此 同时 此外 事实上 总的来说 与此同时 另一方面 换句话说 从这个角度看 归根结底".split(),
    "people": "人们 年轻人 老人 孩子们 学者 旅行者 读者 居民 工匠 作者".split(),
}

ZH_TEMPLATES = [
    "{conn}，{topic}{adv}{verb}着{adj}{noun}。",
    "{people}在{noun}中{verb}{noun}，也{verb}了{adj}{noun}。",
    "{topic}的{noun}{verb}了{people}的{noun}。",
    "{conn}，{adj}{noun}与{noun}{adv}交织在一起，{verb}出{adj}{noun}。",
    "在{topic}的{noun}里，{people}{adv}{verb}着{noun}和{noun}。",
    "{noun}不仅{verb}了{topic}，而且{verb}了{adj}{noun}。",
    "为什么{topic}能够{verb}{noun}？",
    "{people}常说，{noun}是{topic}最{adj}{noun}。",
    "{conn}，{topic}{verb}的不只是{noun}，更是{adj}{noun}。",
    "每一个{noun}都在{verb}{topic}，每一段{noun}都{adv}{verb}着{noun}。",
    "从{noun}到{noun}，{topic}{adv}{verb}着{people}的{noun}。",
    "{adj}{noun}{verb}了{noun}。",
]

_SLOT = re.compile(r"\{(\w+)\}")


def _parse_en(template: str) -> list[tuple[bool, str]]:
    """Pieces as (is_slot, text); slot names keep their case (capitalised = sentence start)."""
    pieces = []
    for part in template.split():
        m = _SLOT.fullmatch(part)
        pieces.append((True, m.group(1)) if m else (False, part))
    return pieces


def _parse_zh(template: str) -> list[tuple[bool, str]]:
    pieces: list[tuple[bool, str]] = []
    pos = 0
    for m in _SLOT.finditer(template):
        if m.start() > pos:
            pieces.append((False, template[pos:m.start()]))
        pieces.append((True, m.group(1)))
        pos = m.end()
    if pos < len(template):
        pieces.append((False, template[pos:]))
    return pieces


EN_PARSED = [_parse_en(t) for t in EN_TEMPLATES]
ZH_PARSED = [_parse_zh(t) for t in ZH_TEMPLATES]

EN_STOPWORDS = frozenset("""
about above after again against all also among an and another any are around article because
been before being below between both but by can could describe detail details did does doing
down during each essay every explain few following for from further give had has have having
here how however include including into its itself just least less like long make many might
more most much must need needs no nor not now of off once only other ought our out over own
paragraph paragraphs please provide rather really same shall should since some story such
summary summarize summarise than that the their them then there these they this those
through total under until very want was were what when where which while who whom why will
with within without words word would write writing written your yours approximately around
about roughly least maximum minimum length response answer text section sections plan
following step steps main point points count number output format json object return using
based current previous next part parts first second third make sure keep already given below
above task tasks user assistant system content instruction instructions question questions
""".split())

ZH_STOP_PHRASES = [
    "请你", "请", "写一篇", "写一个", "写", "一篇", "一个", "关于", "文章", "字数", "字左右", "左右",
    "大约", "要求", "不少于", "不超过", "以内", "以上", "我们", "你们", "他们", "我", "你", "他",
    "的", "了", "和", "与", "及", "是", "在", "为", "以", "把", "被", "对", "就", "都", "也", "并",
    "这", "那", "个", "篇", "字", "约", "吗", "呢", "吧", "要", "需要", "能", "可以", "给", "帮",
    "内容", "包括", "主题", "段落", "回答", "总结", "摘要", "描述", "介绍",
]
