"""Box and point geometry in the LiDAR frame (x forward, y left, z up; metres, radians).

Box corners, LiDAR <-> camera conversions, heading wrapping, points-in-boxes, exact rotated BEV and
3D IoU, rotated and circle NMS, box coders, range-image projection and point neighbourhoods.
Boxes are float32 [M, 7 (+2)]: x, y, z, dx, dy, dz, heading (, vx, vy).
"""
