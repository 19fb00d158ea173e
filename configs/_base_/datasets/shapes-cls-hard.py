# The hard generated crops: 8 classes (some alike: pentagon/hexagon/circle, rhombus/square), faint, occluded,
# cluttered, noisy, blurred objects, off-centre crops; 1600 train / 300 val images (about 4800 / 900 crops).
#   python tools/misc/generate_shapes_dataset.py --hard --out data/shapes_hard
_base_ = './shapes-cls.py'

data_root = 'data/shapes_hard/cls/'
data_preprocessor = dict(num_classes=8)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
