# The demo PD-B classifier on the hard crops, where it does not saturate (the default set gives it
# above 90% top-1), so that variants can be told apart (tools/analysis_tools/ablation.py):
#   python tools/misc/generate_shapes_dataset.py --hard --out data/shapes_hard
#   python tools/train.py configs/demo/pd-b-resnet18_shapes-cls-hard.py
# --hard: 8 classes (some alike: pentagon/hexagon/circle, rhombus/square), faint, occluded, cluttered,
# noisy, blurred objects, off-centre crops; 1600 train / 300 val images (about 4800 / 900 crops).
_base_ = './pd-b-resnet18_shapes-cls.py'

num_classes = 8
data_root = 'data/shapes_hard/cls/'
model = dict(head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
