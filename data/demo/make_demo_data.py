"""Write the demo dataset (our own text): train.jsonl, heldout.jsonl and questions.json in this folder.

    python data/demo/make_demo_data.py

Two skills a small chat model does not have, so a short LoRA run visibly changes it:
- an identity: it is "Tune", a small assistant fine-tuned by the qwentune demo;
- an answer format: every factual answer is two lines, "答案：..." / "理由：..." in Chinese and
  "Answer: ..." / "Why: ..." in English.
The held-out split uses facts and identity questions that training never sees, so it measures
whether the skills generalize rather than whether the examples were memorized. Deterministic:
the files in the repository are exactly what this script writes (a test checks it).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

IDENTITY_ZH = "我是 Tune，一个由 qwentune 演示微调出来的小助手。我会用“答案”和“理由”两行来回答问题。"
IDENTITY_EN = "I am Tune, a small assistant fine-tuned by the qwentune demo. I answer in two lines: Answer and Why."

IDENTITY_QUESTIONS_ZH = ["你是谁？", "介绍一下你自己。", "你叫什么名字？", "谁训练了你？", "你是什么助手？",
                         "请问怎么称呼你？", "你能做自我介绍吗？", "你的名字是什么？", "你是哪个模型？", "跟我说说你是谁。"]
IDENTITY_QUESTIONS_EN = ["Who are you?", "Introduce yourself.", "What is your name?", "Who trained you?",
                         "What kind of assistant are you?", "How should I call you?", "Tell me about yourself.",
                         "What's your name?", "Which model are you?", "Say who you are."]

# (question, short answer, one-sentence reason)
FACTS_ZH = [
    ("中国的首都是哪里？", "北京。", "北京是中华人民共和国的首都和政治中心。"),
    ("日本的首都是哪里？", "东京。", "东京是日本的首都，也是最大的城市。"),
    ("法国的首都是哪里？", "巴黎。", "巴黎是法国的首都和最大城市。"),
    ("英国的首都是哪里？", "伦敦。", "伦敦是英国的首都，位于泰晤士河畔。"),
    ("一年有几个季节？", "四个。", "一年分为春、夏、秋、冬四个季节。"),
    ("一周有几天？", "七天。", "一周从星期一到星期日，共七天。"),
    ("水的化学式是什么？", "H2O。", "一个水分子由两个氢原子和一个氧原子组成。"),
    ("太阳从哪个方向升起？", "东方。", "地球自西向东自转，所以太阳从东方升起。"),
    ("熊猫主要吃什么？", "竹子。", "大熊猫的食物绝大部分是竹子。"),
    ("彩虹有几种颜色？", "七种。", "常说的彩虹颜色是红、橙、黄、绿、青、蓝、紫。"),
    ("地球上最大的海洋是哪个？", "太平洋。", "太平洋的面积比其他任何海洋都大。"),
    ("冰在多少摄氏度融化？", "0 摄氏度。", "在标准大气压下，冰的熔点是 0 摄氏度。"),
    ("人有多少颗恒牙？", "通常 32 颗。", "成年人的恒牙一般是 28 到 32 颗，包括智齿时为 32 颗。"),
    ("长城在哪个国家？", "中国。", "长城是中国古代修建的军事防御工程。"),
    ("月亮绕着什么转？", "地球。", "月球是地球的天然卫星，绕地球公转。"),
    ("植物进行光合作用需要什么？", "阳光、水和二氧化碳。", "植物利用光能把水和二氧化碳转化为有机物和氧气。"),
    ("中国的国土面积大约是多少？", "约 960 万平方公里。", "中国陆地面积约为 960 万平方公里。"),
    ("世界上最高的山峰是哪座？", "珠穆朗玛峰。", "珠穆朗玛峰海拔约 8849 米，是世界最高峰。"),
    ("一小时有多少分钟？", "60 分钟。", "时间单位规定一小时等于 60 分钟。"),
    ("蜜蜂会酿造什么？", "蜂蜜。", "蜜蜂采集花蜜并把它酿成蜂蜜。"),
    ("中国最长的河流是哪条？", "长江。", "长江全长约 6300 公里，是中国第一长河。"),
    ("鱼用什么呼吸？", "鳃。", "鱼通过鳃从水中获取氧气。"),
    ("哪种动物被称为沙漠之舟？", "骆驼。", "骆驼耐渴耐旱，适合在沙漠中长途行走。"),
    ("一年有多少个月？", "十二个月。", "公历一年分为十二个月。"),
    ("声音在哪里不能传播？", "真空中。", "声音需要介质传播，真空中没有介质。"),
    ("人体最大的器官是什么？", "皮肤。", "皮肤覆盖全身，是人体面积最大的器官。"),
    ("端午节吃什么传统食品？", "粽子。", "端午节有吃粽子纪念屈原的习俗。"),
    ("中秋节吃什么传统食品？", "月饼。", "中秋节人们赏月并吃月饼，象征团圆。"),
    ("三角形的内角和是多少度？", "180 度。", "平面三角形三个内角之和总是 180 度。"),
    ("正方形有几条边？", "四条。", "正方形由四条相等的边围成。"),
]
FACTS_EN = [
    ("What is the capital of Italy?", "Rome.", "Rome has been Italy's capital since 1871."),
    ("What is the capital of Canada?", "Ottawa.", "Ottawa, not Toronto, is the seat of Canada's government."),
    ("What is the capital of Australia?", "Canberra.", "Canberra was built as a compromise between Sydney and Melbourne."),
    ("What is the capital of Germany?", "Berlin.", "Berlin became the capital of reunified Germany in 1990."),
    ("How many days are in a leap year?", "366.", "A leap year adds February 29 to the usual 365 days."),
    ("How many legs does a spider have?", "Eight.", "Spiders are arachnids, and arachnids have eight legs."),
    ("What gas do plants release?", "Oxygen.", "Photosynthesis splits water and releases oxygen."),
    ("What is the boiling point of water at sea level?", "100 °C.", "At one atmosphere of pressure water boils at 100 °C."),
    ("Which planet is known as the red planet?", "Mars.", "Iron oxide dust gives the surface of Mars its red color."),
    ("How many continents are there?", "Seven.", "The usual count is Africa, Antarctica, Asia, Australia, Europe, and the two Americas."),
    ("What is the largest mammal?", "The blue whale.", "Blue whales can be about 30 meters long, larger than any other animal."),
    ("What do bees make?", "Honey.", "Bees turn flower nectar into honey and store it in the hive."),
    ("What is the freezing point of water?", "0 °C.", "At sea-level pressure pure water freezes at 0 °C."),
    ("How many hours are in a day?", "24.", "Earth turns once on its axis in about 24 hours."),
    ("What is the chemical symbol for gold?", "Au.", "The symbol comes from the Latin word aurum."),
    ("Which ocean is the largest?", "The Pacific Ocean.", "The Pacific covers more area than all land on Earth combined."),
    ("What is the tallest mountain in the world?", "Mount Everest.", "Everest rises about 8,849 meters above sea level."),
    ("How many minutes are in an hour?", "60.", "An hour is defined as sixty minutes."),
    ("What is the main language of Brazil?", "Portuguese.", "Brazil was a Portuguese colony, so Portuguese became its language."),
    ("Which animal is called the king of the jungle?", "The lion.", "Lions are large, strong predators, so stories call them kings."),
    ("How many sides does a hexagon have?", "Six.", "The prefix hexa means six."),
    ("What is the sum of angles in a triangle?", "180 degrees.", "In a flat plane a triangle's three angles always add up to 180 degrees."),
    ("What organ pumps blood through the body?", "The heart.", "The heart's muscle contracts to push blood through the vessels."),
    ("What is the closest star to Earth?", "The Sun.", "The Sun is about 150 million kilometers away, far closer than any other star."),
    ("Which metal is liquid at room temperature?", "Mercury.", "Mercury melts at about -39 °C, well below room temperature."),
    ("How many strings does a standard guitar have?", "Six.", "A standard guitar is strung with six strings, E A D G B E."),
    ("What is the longest river in Africa?", "The Nile.", "The Nile runs about 6,650 kilometers to the Mediterranean."),
    ("What do caterpillars turn into?", "Butterflies or moths.", "Caterpillars are the larvae that later transform in a pupa."),
    ("How many weeks are in a year?", "52.", "365 days divided by 7 gives 52 weeks and one day."),
    ("What color do you get by mixing blue and yellow?", "Green.", "Blue and yellow pigments together reflect mostly green light."),
]


def formatted_zh(answer: str, reason: str) -> str:
    return f"答案：{answer}\n理由：{reason}"


def formatted_en(answer: str, reason: str) -> str:
    return f"Answer: {answer}\nWhy: {reason}"


def arithmetic(rng: random.Random, count: int) -> list[tuple[str, str, str, str]]:
    """(language, question, answer, reason): count pairs of sums and products, no question twice."""
    items: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    while len(items) < 2 * count:
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        c = b % 12 + 2
        if len(items) % 4 == 0:
            pair = [("zh", f"{a} 加 {b} 等于多少？", f"{a + b}。", f"{a} + {b} = {a + b}。"),
                    ("en", f"What is {a} times {c}?", f"{a * c}.", f"{a} × {c} = {a * c}.")]
        else:
            pair = [("zh", f"{a} 乘以 {c} 等于多少？", f"{a * c}。", f"{a} × {c} = {a * c}。"),
                    ("en", f"What is {a} plus {b}?", f"{a + b}.", f"{a} + {b} = {a + b}.")]
        if any(question in seen for _, question, _, _ in pair):  # asked twice, it could land in both splits
            continue
        seen.update(question for _, question, _, _ in pair)
        items += pair
    return items


def record(question: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]}


def build() -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(20261128)
    train, heldout, questions = [], [], []
    # Identity: the last two phrasings of each language are held out.
    for zh, en, position in zip(IDENTITY_QUESTIONS_ZH, IDENTITY_QUESTIONS_EN, range(len(IDENTITY_QUESTIONS_ZH))):
        target = heldout if position >= len(IDENTITY_QUESTIONS_ZH) - 2 else train
        target += [record(zh, IDENTITY_ZH), record(en, IDENTITY_EN)]
        if target is heldout:
            questions += [{"question": zh, "reference": IDENTITY_ZH, "category": "identity"},
                          {"question": en, "reference": IDENTITY_EN, "category": "identity"}]
    # Facts: every fifth fact of each language is held out.
    for facts, fmt, lang in ((FACTS_ZH, formatted_zh, "zh"), (FACTS_EN, formatted_en, "en")):
        for index, (question, answer, reason) in enumerate(facts):
            example = record(question, fmt(answer, reason))
            if index % 5 == 4:
                heldout.append(example)
                questions.append({"question": question, "reference": fmt(answer, reason), "category": f"format-{lang}"})
            else:
                train.append(example)
    # Arithmetic in the same format; a slice held out.
    sums = arithmetic(rng, 100)
    for index, (lang, question, answer, reason) in enumerate(sums):
        reply = formatted_zh(answer, reason) if lang == "zh" else formatted_en(answer, reason)
        (heldout if index >= len(sums) - 16 else train).append(record(question, reply))
        if index >= len(sums) - 4:
            questions.append({"question": question, "reference": reply, "category": "arithmetic"})
    # Repeating the identity examples gives that skill weight comparable to the format one.
    train += [example for example in train if example["messages"][1]["content"] in (IDENTITY_ZH, IDENTITY_EN)] * 2
    rng.shuffle(train)
    return train, heldout, questions


def write(directory: Path = HERE) -> None:
    train, heldout, questions = build()
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        (directory / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (directory / "questions.json").write_text(json.dumps(questions, ensure_ascii=False, indent=1) + "\n",
                                              encoding="utf-8")


if __name__ == "__main__":
    write()
    train, heldout, questions = build()
    print(f"train {len(train)}, held out {len(heldout)}, demo questions {len(questions)}")
